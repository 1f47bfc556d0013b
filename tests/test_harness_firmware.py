"""edgekd.harness.firmware_project: the projects of `edgekd export --firmware`.

``edgekd export --firmware``: the C-backend Makefile project (built here for Cortex-M4, and for the host,
where it is driven over a pty by the host runner) and the TFLite Micro variant (files, model array,
resolver, and its protocol code compiled on the host against a stub model).
"""

from __future__ import annotations

import os
import shlex
import subprocess

import numpy as np
import pytest
from _mlperf_official import STUB_MODEL_C, on_pty

from edgekd.export.c_backend.host import gcc
from edgekd.graph import run_tflm
from edgekd.graph.sample_models import sample_models
from edgekd.harness import protocol as p
from edgekd.harness.firmware_project import write_c_backend_project
from edgekd.harness.mlperf import (
    FW_VERSION,
    ModelIO,
    WireSettings,
    decode_input,
    format_results,
    result_values,
)
from edgekd.harness.qemu import have_toolchain
from edgekd.harness.runner import Device, run_accuracy

pytestmark = pytest.mark.skipif(gcc() is None, reason="no host gcc")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    from edgekd.cli import main

    model = sample_models(["mlp"])["mlp"]
    out = tmp_path_factory.mktemp("fw") / "export"
    main(["export", str(model), "--target", "cortex-m4-qemu", "--firmware", "-o", str(out), "--quiet"])
    return model, out


def test_export_writes_c_sources_and_both_firmware_projects(exported):
    import json

    model, out = exported
    info = json.loads((out / "c" / "c_model.json").read_text())
    assert info["host_check"]["bit_exact"] is True and info["arena_bytes"] > 0
    tflm = out / "firmware" / "tflite_micro"
    for f in ("README.md", "platformio.ini", "src/model_data.cc", "src/op_resolver.h", "src/tflm_model.cc",
              "src/ee_main.c", "src/edgekd_model.h", "src/board_port.c"):  # fmt: skip
        assert (tflm / f).is_file(), f
    assert "const unsigned char g_model[]" in (tflm / "src/model_data.cc").read_text()
    assert "AddFullyConnected" in (tflm / "src/op_resolver.h").read_text()
    cc = (tflm / "src/tflm_model.cc").read_text()
    assert '#include "model_data.h"' in cc and '#include "op_resolver.h"' in cc
    from edgekd.export.micro import arena_report
    from edgekd.graph import measure_arena

    header = (tflm / "src/edgekd_model.h").read_text()
    assert f"#define EDGEKD_ARENA_SIZE {arena_report(measure_arena(model))['recommended_bytes']}" in header
    assert "create_tflm_tree.py" in (tflm / "README.md").read_text()


def _build_flags_defines(ini: str) -> list[str]:
    """The ``-DEE_...`` settings of platformio.ini's build_flags."""
    flags = next(ln for ln in ini.splitlines() if ln.startswith("build_flags"))
    return [f for f in shlex.split(flags.split("=", 1)[1]) if f.startswith("-DEE_")]


def test_tflm_variant_protocol_code_compiles_and_answers_on_the_host(exported, tmp_path):
    """The project's ee_main.c with its platformio.ini settings, around the stand-in model."""
    model, out = exported
    proj = out / "firmware" / "tflite_micro"
    src = proj / "src"
    (tmp_path / "stub_model.c").write_text(STUB_MODEL_C)
    defines = _build_flags_defines((proj / "platformio.ini").read_text())
    io = ModelIO.of(model)
    settings = WireSettings.of(model)
    assert f"-DEE_INPUT_FORMAT={settings.input_format}" in defines
    exe = tmp_path / "fw"
    cmd = [gcc(), "-std=c99", "-Wall", "-Wextra", "-Werror", f"-I{src}", *defines, "-o", str(exe),
           str(src / "ee_main.c"), str(src / "board_host.c"), str(tmp_path / "stub_model.c"), "-lm"]  # fmt: skip
    subprocess.run(cmd, check=True, capture_output=True)
    data = bytes(range(io.input_nbytes(settings.input_format)))
    cmds = "name%profile%" + "".join(p.db_lines(data)) + "infer 3 1%db 0g%bogus%"
    r = subprocess.run([str(exe)], input=cmds.encode(), capture_output=True, timeout=10)
    msgs = [p.parse_line(ln) for ln in r.stdout.decode().splitlines() if ln.strip()]
    kinds = [m.kind for m in msgs]
    assert kinds[:4] == ["timestamp_mode", "lap_us", "init_done", "ready"]
    assert "load_done" in kinds and kinds.count("lap_us") == 3
    assert next(m.value for m in msgs if m.kind == "model") == settings.model_name
    q, xf = decode_input(data, io, settings.input_format)
    x = q.view(np.int8).astype(np.int64)
    out_q = np.array([((x[i % len(x)] + i + 128) % 256) - 128 for i in range(io.output_size)])
    want = format_results(result_values(out_q, xf, io, settings.model_name, settings.results))
    assert next(m.raw for m in msgs if m.kind == "results") == want
    errors = [m.value for m in msgs if m.kind == "error"]
    assert errors == ["Invalid hex digit '0g'", "Unknown command: bogus"]


def test_c_backend_project_builds_and_is_bit_exact_over_the_protocol(exported, tmp_path):
    model, out = exported
    assert "-DEE_RESULTS=" in (out / "firmware" / "c_backend" / "Makefile").read_text()
    proj = tmp_path / "c_backend"  # raw int8 results: comparable byte for byte
    write_c_backend_project(model, proj, WireSettings("ic01", "int8", "raw", "edgekd test"))
    subprocess.run(["make", "-s", "-C", str(proj), "host"], check=True, capture_output=True)
    x = np.random.default_rng(3).integers(-128, 128, size=(5, 64)).astype(np.int8)
    host = run_tflm(model, x)
    # the host build reads stdin / writes stdout: put it on a pty and drive it with the host runner
    with on_pty(proj / "firmware_host") as port, Device(port, timeout=2) as dev:
        info = dev.handshake()
        assert (info.profile, info.model, info.name) == (FW_VERSION, "ic01", "edgekd test")
        res = run_accuracy(dev, x, host, None).as_dict()
    assert res["bit_exact"] is True and res["samples"] == 5


@pytest.mark.skipif(not have_toolchain() and not os.environ.get("CI"), reason="no arm-none-eabi-gcc")
def test_c_backend_project_cross_compiles_for_cortex_m4(exported):
    _, out = exported
    proj = out / "firmware" / "c_backend"
    r = subprocess.run(["make", "-s", "-C", str(proj)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert (proj / "firmware.elf").is_file() and "firmware.elf" in r.stdout


def test_unsupported_op_skips_c_backend_project_and_format_c_fails_clearly(tmp_path, capsys):
    from edgekd.cli import main

    model = sample_models(["scratch_ops"])["scratch_ops"]
    main(
        ["export", str(model), "--target", "tflite-micro", "--firmware", "-o", str(tmp_path / "a"), "--quiet"]
    )
    assert (tmp_path / "a/firmware/tflite_micro/src/model_data.cc").is_file()
    assert not (tmp_path / "a/firmware/c_backend").exists()
    with pytest.raises(SystemExit) as ei:
        main(["export", str(model), "--format", "c", "-o", str(tmp_path / "b"), "--quiet"])
    assert ei.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "TRANSPOSE_CONV" in err and "TFLite Micro firmware" in err


def test_firmware_settings_default_to_the_mlperf_task_and_samples_are_checked(tmp_path):
    from edgekd.errors import EdgekdError
    from edgekd.harness.qemu import _write_samples, samples_c

    model = sample_models(["mlp"])["mlp"]
    io = ModelIO.of(model)
    s = WireSettings.of(model)
    assert (s.model_name, s.input_format) == ("ic01", "uint8") and s.results in ("float", "softmax")
    assert WireSettings.of(model, "ad01").as_dict()["input_format"] == "float32"
    assert "-DEE_INPUT_FORMAT=uint8" in s.defines() and '-DEE_MODEL_NAME="ic01"' in s.defines()
    with pytest.raises(EdgekdError, match="--mlperf-model 'kws02': valid: kws01"):
        WireSettings.of(model, "kws02")
    with pytest.raises(EdgekdError, match=r"uint8 wire bytes of shape \(N, 256\) \(float32 input\)"):
        _write_samples(
            model, tmp_path, np.zeros((2, io.input_elements), np.uint8), WireSettings.of(model, "ad01")
        )
    assert _write_samples(model, tmp_path, np.zeros((2, io.input_elements), np.uint8), s) == 2
    assert samples_c(np.array([[1, 2], [3, 4]], np.uint8)).endswith(
        "const uint8_t edgekd_samples[2][2] = {\n{1,2},\n{3,4}\n};\n"
    )


@pytest.mark.slow
def test_export_firmware_takes_the_mlperf_settings(tmp_path):
    from edgekd.cli import main

    model = sample_models(["mlp"])["mlp"]
    out = tmp_path / "export"
    main(["export", str(model), "--target", "cortex-m4-qemu", "--firmware", "--mlperf-model", "ad01",
          "--results", "raw", "-o", str(out), "--quiet"])  # fmt: skip
    make = (out / "firmware" / "c_backend" / "Makefile").read_text()
    assert "-DEE_MODEL_NAME='\"ad01\"'" in make
    assert "-DEE_INPUT_FORMAT=float32" in make and "-DEE_RESULTS=raw" in make
    ini = (out / "firmware" / "tflite_micro" / "platformio.ini").read_text()
    assert "ad01" in ini and "float32" in ini and "raw" in ini
