"""edgekd.harness.firmware_project: the projects of `edgekd export --firmware`.

``edgekd export --firmware``: the C-backend Makefile project (built here for Cortex-M4, and for the host,
where it is driven over a pty by the host runner) and the TFLite Micro variant (files, model array,
resolver, and its protocol code compiled on the host against a stub model).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import tty

import numpy as np
import pytest

from edgekd.export.c_backend.host import gcc
from edgekd.graph import read_tflite, run_tflm
from edgekd.graph.sample_models import sample_models
from edgekd.harness import protocol as p
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
    from edgekd.graph import measure_arena

    header = (tflm / "src/edgekd_model.h").read_text()
    assert f"#define EDGEKD_ARENA_SIZE {(measure_arena(model)['total'] + 15) // 16 * 16}" in header
    assert "create_tflm_tree.py" in (tflm / "README.md").read_text()


STUB_MODEL = """#include "edgekd_model.h"
static int8_t in_[EDGEKD_INPUT_SIZE], out_[EDGEKD_OUTPUT_SIZE];
int8_t *edgekd_input(void) { return in_; }
const int8_t *edgekd_output(void) { return out_; }
void edgekd_invoke(void) { for (int i = 0; i < EDGEKD_OUTPUT_SIZE; ++i) out_[i] = (int8_t)(in_[i % EDGEKD_INPUT_SIZE] + i); }
"""


def test_tflm_variant_protocol_code_compiles_and_answers_on_the_host(exported, tmp_path):
    model, out = exported
    src = out / "firmware" / "tflite_micro" / "src"
    (tmp_path / "stub_model.c").write_text(STUB_MODEL)
    exe = tmp_path / "fw"
    cmd = [gcc(), "-std=c99", "-Wall", "-Wextra", "-Werror", f"-I{src}", "-o", str(exe), str(src / "ee_main.c"),
           str(src / "board_host.c"), str(tmp_path / "stub_model.c")]  # fmt: skip
    subprocess.run(cmd, check=True, capture_output=True)
    n_in = read_tflite(model).input_details()[0]["nbytes"]
    cmds = "name%profile%" + "".join(p.db_lines(bytes(range(n_in)))) + "infer 3 1%db 0g%bogus%"
    r = subprocess.run([str(exe)], input=cmds.encode(), capture_output=True, timeout=10)
    msgs = [p.parse_line(ln) for ln in r.stdout.decode().splitlines() if ln.strip()]
    kinds = [m.kind for m in msgs]
    assert kinds[:3] == ["timestamp_mode", "init_done", "ready"]
    assert "load_done" in kinds and kinds.count("lap_us") == 2
    res = next(m.value for m in msgs if m.kind == "results")
    assert res == [(i % n_in) + i if (i % n_in) + i < 128 else (i % n_in) + i - 256 for i in range(10)]
    errors = [m.value for m in msgs if m.kind == "error"]
    assert errors == ["Invalid hex digit 'g'", "Unknown command: bogus"]


@contextlib.contextmanager
def _on_pty(exe):
    master, slave = os.openpty()
    tty.setraw(slave)
    proc = subprocess.Popen([str(exe)], stdin=master, stdout=master, stderr=subprocess.DEVNULL)
    try:
        yield os.ttyname(slave)
    finally:
        proc.kill()
        proc.wait()
        os.close(master)
        os.close(slave)


def test_c_backend_project_builds_and_is_bit_exact_over_the_protocol(exported):
    model, out = exported
    proj = out / "firmware" / "c_backend"
    subprocess.run(["make", "-s", "-C", str(proj), "host"], check=True, capture_output=True)
    x = np.random.default_rng(3).integers(-128, 128, size=(5, 64)).astype(np.int8)
    host = run_tflm(model, x)
    # the host build reads stdin / writes stdout: put it on a pty and drive it with the host runner
    with _on_pty(proj / "firmware_host") as port, Device(port, timeout=2) as dev:
        assert dev.handshake().profile == "edgekd-c-backend"
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
