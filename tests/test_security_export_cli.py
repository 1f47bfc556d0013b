"""`edgekd export MODEL.tflite` and `edgekd bench --emulate` under hostile use (issue 19).

Issue 19 items 9 and 10 (part): ``edgekd export MODEL.tflite`` does what it is asked or refuses in one
line (no empty folders, no ignored options, no ``c/c/``), never replaces a folder that is not an earlier
export, keeps the previous export when one fails, and ``edgekd bench --emulate`` leaves no QEMU behind
whatever signal ends it.

Every input is built here: int8 models from :mod:`edgekd.graph.sample_models`, a float model and a
too-small board file written by the test, a user's folder with a file in it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from _checks import one_line_error as _one_line_error
from _checks import tree as _tree

from edgekd.graph import measure_arena, read_tflite
from edgekd.graph.sample_models import sample_models

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def int8_model(tmp_path: Path) -> Path:
    """The repo's tiny int8 CNN (conv, depthwise, pools, dense, softmax), copied as ``m.tflite``."""
    dst = tmp_path / "m.tflite"
    shutil.copy(sample_models(["tiny_cnn"])["tiny_cnn"], dst)
    return dst


def _c_array_bytes(cc: str) -> bytes:
    body = cc[cc.index("{") + 1 : cc.index("};")]
    return bytes(int(h, 16) for h in re.findall(r"0x([0-9a-f]{2})", body))


# 9. a .tflite to TFLite Micro targets ---------------------------------------------------------------
@pytest.mark.parametrize(("target", "ram"), [("tflite-micro", None), ("nucleo-l4r5zi", 640 * 1024)])
def test_9_tflite_to_a_micro_target_writes_the_artifacts_and_reports_arena_and_fit(
    int8_model, run_cli, target, ram
):
    code, err = run_cli(["export", str(int8_model), "--target", target])
    assert code == 0, err
    out = int8_model.parent / "m_export" / target  # one level
    files = {p.name for p in out.iterdir()}
    assert files == {"model_int8.tflite", "model_data.cc", "model_data.h", "op_resolver.h", "arena.json",
                     "export.json"}  # fmt: skip
    assert all((out / f).stat().st_size > 0 for f in files)
    data = int8_model.read_bytes()
    assert (out / "model_int8.tflite").read_bytes() == data
    cc = (out / "model_data.cc").read_text()
    assert "alignas(16) const unsigned char g_model[]" in cc and f"g_model_len = {len(data)};" in cc
    assert _c_array_bytes(cc) == data  # the C array is the model, byte for byte
    resolver = (out / "op_resolver.h").read_text()
    ops = read_tflite(int8_model).op_names()
    assert f"constexpr int kNumOps = {len(ops)};" in resolver
    for m in ("AddConv2D", "AddDepthwiseConv2D", "AddMaxPool2D", "AddAveragePool2D", "AddFullyConnected",
              "AddSoftmax", "AddReshape"):  # fmt: skip
        assert f"resolver.{m}()" in resolver, m
    measured = measure_arena(int8_model)
    arena = json.loads((out / "arena.json").read_text())
    assert arena["tflm"] == measured and arena["recommended_bytes"] >= measured["total"] + 1024
    rec = json.loads((out / "export.json").read_text())
    assert rec["format"] == "tflite-micro" and rec["name"] == target and rec["source"]["type"] == "tflite"
    assert rec["source"]["sha256"] == hashlib.sha256(data).hexdigest()
    assert rec["fit"]["fits"] is True
    ram_row, flash_row = rec["fit"]["rows"]
    assert ram_row["needed"] == measured["total"] and ram_row["available"] == ram
    assert flash_row["needed"] == len(data)
    assert rec["files"]["model_data.cc"]["bytes"] == (out / "model_data.cc").stat().st_size
    assert f"TFLite Micro arena {measured['total']:,} B" in err  # reported on stderr
    assert f"fit check: {target}" in err and "pass" in err


def test_9_the_python_api_takes_a_tflite_the_same_way(int8_model):
    from edgekd.errors import EdgekdError
    from edgekd.export import export_run

    out = export_run(int8_model, target="tflite-micro")
    assert out == int8_model.parent / "m_export" / "tflite-micro"
    assert json.loads((out / "arena.json").read_text())["tflm"] == measure_arena(int8_model)
    with pytest.raises(EdgekdError, match=r"--quant fp32: .*m.tflite is exported as it is"):
        export_run(int8_model, fmt="c", quant=["fp32"])
    with pytest.raises(EdgekdError, match="calibration: does not apply"):
        export_run(int8_model, fmt="c", calibration="calib.npz")


def test_9_a_board_that_does_not_exist_is_an_error_listing_the_known_ones(int8_model, run_cli):
    before = _tree(int8_model.parent)
    code, err = run_cli(["export", str(int8_model), "--target", "no-such-board"])
    _one_line_error(code, err, "unknown target 'no-such-board'", "tflite-micro", "nucleo-l4r5zi",
                    "cortex-m4-qemu", "board .yaml")  # fmt: skip
    assert _tree(int8_model.parent) == before  # no empty m_export/ folder


@pytest.mark.parametrize(
    ("args", "parts"),
    [
        (["--format", "onnx"], ["--format onnx", "does not convert TFLite back to ONNX", "--format c"]),
        (["--format", "tflite"], ["--format tflite", "already is a TFLite model"]),
        (["--format", "c", "--quant", "fp32"], ["--quant fp32", "full-integer int8", "leave --quant out"]),
        (["--target", "tflite-micro", "--quant", "fp16"], ["--quant fp16", "target tflite-micro"]),
        (["--target", "android-arm64"], ["--target android-arm64", "nothing to export", "tflite-micro"]),
        ([], ["pass exactly one of --target NAME", "--format c"]),
        (["--format", "c", "--calibration", "calib.npz"], ["--calibration: does not apply", "leave"]),
        (["--target", "tflite-micro", "--eval", "test.npz"], ["--eval: does not apply"]),
        (["--format", "c", "--route", "onnx2tf"], ["--route: does not apply"]),
        (["--format", "c", "--method", "entropy"], ["--method: does not apply"]),
    ],
    ids=[
        "onnx",
        "tflite",
        "quant-fp32-c",
        "quant-fp16-micro",
        "mobile-target",
        "neither",
        "calibration",
        "eval",
        "route",
        "method",
    ],  # fmt: skip
)
def test_9_an_option_that_cannot_apply_to_a_tflite_is_refused_with_the_reason(
    int8_model, run_cli, args, parts
):
    before = _tree(int8_model.parent)
    code, err = run_cli(["export", str(int8_model), *args])
    _one_line_error(code, err, str(int8_model), *parts)  # names the file and says why
    assert _tree(int8_model.parent) == before


def test_9_a_float_tflite_is_refused_for_tflite_micro(tmp_path, run_cli):
    from edgekd.export.c_backend.testing import Builder, S

    b = Builder()  # a one-op float model: TFLite Micro targets need full integer
    x = b.tensor([1, 4], None, None, dtype=S.TensorType.FLOAT32)
    y = b.tensor([1, 4], None, None, dtype=S.TensorType.FLOAT32)
    model = tmp_path / "float.tflite"
    model.write_bytes(b.build(S.BuiltinOperator.RELU, [x], y))
    assert read_tflite(model).kind == "float"
    for args in (["--target", "tflite-micro"], ["--format", "c"]):
        code, err = run_cli(["export", str(model), *args])
        _one_line_error(code, err, str(model), "a float model", "full-integer int8")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["float.tflite"]


def test_9_format_c_default_output_is_one_level(int8_model, run_cli):
    code, err = run_cli(["export", str(int8_model), "--format", "c", "--quiet"])
    out = int8_model.parent / "m_export" / "c"
    assert code == 0, err
    assert not (out / "c").exists()  # not m_export/c/c/
    assert {"edgekd_model.c", "edgekd_model.h", "edgekd_kernels.c", "c_model.json", "export.json"} <= {
        p.name for p in out.iterdir()
    }
    info = json.loads((out / "c_model.json").read_text())
    assert info["host_check"]["bit_exact"] in (True, None) and info["arena_bytes"] > 0
    assert json.loads((out / "export.json").read_text())["format"] == "c"
    assert sorted(p.name for p in (int8_model.parent / "m_export").iterdir()) == ["c"]


def test_9_a_failed_export_keeps_the_previous_one(int8_model, run_cli, tmp_path):
    out = tmp_path / "out"
    code, err = run_cli(["export", str(int8_model), "--target", "tflite-micro", "-o", str(out), "--quiet"])
    assert code == 0, err
    before = _tree(out)
    board = tmp_path / "tiny-board.yaml"  # 1 KiB of RAM: the measured arena cannot fit
    board.write_text(yaml.safe_dump({"name": "tiny-board", "kind": "mcu", "cpu": "Cortex-M0", "clock_mhz": 16,
                                     "ram_kb": 1, "flash_kb": 2, "runtime": "tflite-micro",
                                     "quantization": "int8"}))  # fmt: skip
    code, err = run_cli(["export", str(int8_model), "--target", str(board), "-o", str(out), "--quiet"])
    _one_line_error(code, err, "does not fit target tiny-board", "RAM needs", "> 1,024 B")
    assert _tree(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.tflite", "out", "tiny-board.yaml"]  # no temp
    code, err = run_cli(["export", str(int8_model), "--target", "nucleo-l4r5zi", "-o", str(out), "--quiet"])
    assert code == 0, err  # an earlier export is replaced as a whole
    assert json.loads((out / "export.json").read_text())["name"] == "nucleo-l4r5zi"


def test_9_output_that_is_a_file_or_a_users_folder_is_refused(int8_model, run_cli, tmp_path):
    mine = tmp_path / "my-folder"
    mine.mkdir()
    (mine / "notes.txt").write_text("the user's own work")
    link = tmp_path / "link"
    link.symlink_to(mine)
    before = _tree(tmp_path)
    cases = [
        (int8_model, "is a file, not an export folder"),
        (mine, "is a folder that is not an earlier edgekd export"),
        (link, "is a link"),
        (int8_model / "x", "is a file, not a folder"),
    ]
    for out, why in cases:
        for args in (["--format", "c"], ["--target", "tflite-micro"]):
            code, err = run_cli(["export", str(int8_model), *args, "-o", str(out)])
            _one_line_error(code, err, f"-o {out}", why)
    assert _tree(tmp_path) == before


def test_9_run_folder_export_does_not_replace_a_users_folder(tmp_path, run_cli):
    from edgekd.models import build_model, save_model

    run = tmp_path / "run"
    run.mkdir()
    kw = {"input_shape": [1, 8, 8], "num_classes": 10, "hidden": [4]}
    save_model(run / "model.pt", build_model("mlp", **kw), "mlp", kw)
    mine = tmp_path / "home"
    mine.mkdir()
    (mine / "thesis.tex").write_text("years of work")
    before = _tree(tmp_path)
    code, err = run_cli(["export", str(run), "--format", "onnx", "-o", str(mine), "--quiet"])
    _one_line_error(code, err, f"-o {mine}", "not an earlier edgekd export", "new folder name")
    assert _tree(tmp_path) == before


# 10 (part). no QEMU left behind ---------------------------------------------------------------------
def _qemu_of(proc: Any) -> Any:
    """The qemu-system-arm below psutil process ``proc``, or None."""
    import psutil

    try:
        return next((c for c in proc.children(recursive=True) if "qemu-system-arm" in c.name()), None)
    except psutil.NoSuchProcess:
        return None


def _gone(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


@pytest.mark.slow
@pytest.mark.parametrize("how", ["SIGTERM", "SIGINT", "SIGHUP", "SIGKILL", "timeout"])
def test_10_bench_emulate_leaves_no_qemu_when_it_is_ended(tmp_path, how):
    import psutil

    from edgekd.harness.qemu import have_toolchain

    if not have_toolchain():
        if os.environ.get("CI", "").lower() in ("1", "true"):
            pytest.fail("CI=true but qemu-system-arm / arm-none-eabi-gcc are missing", pytrace=False)
        pytest.skip("qemu-system-arm / gcc-arm-none-eabi not installed")
    model = sample_models(["mlp"])["mlp"]
    cmd = [sys.executable, "-m", "edgekd", "bench", str(model), "--target", "cortex-m4-qemu", "--emulate",
           "--samples", "100000", "-o", str(tmp_path / "bench"), "-q"]  # fmt: skip
    if how == "timeout":
        cmd = [
            shutil.which("timeout") or pytest.skip("no timeout(1)"),
            "-s",
            "TERM",
            "20",
            *cmd,
        ]  # QEMU up first
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")

    def default_sigint() -> None:  # a shell starts background jobs with SIGINT ignored, nohup SIGHUP
        for sig in (signal.SIGINT, signal.SIGHUP, signal.SIGTERM):
            signal.signal(sig, signal.SIG_DFL)

    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            preexec_fn=default_sigint)  # fmt: skip
    parent = psutil.Process(proc.pid)
    qemu = None
    try:
        deadline = time.monotonic() + 60
        while qemu is None and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.1)
            qemu = _qemu_of(parent)
        assert qemu is not None, proc.stderr.read().decode() if proc.poll() is not None else "no qemu in 60 s"
        time.sleep(0.5)  # QEMU is running the firmware, the host is talking to it
        assert qemu.is_running() and not _gone(qemu.pid)
        if how != "timeout":
            os.kill(proc.pid, getattr(signal, how))
        rc = proc.wait(timeout=30)
        if how == "timeout":
            assert rc == 124
        elif how == "SIGINT":
            assert rc == 130 and "interrupted: benchmark cancelled" in proc.stderr.read().decode()
        else:
            assert rc == -getattr(signal, how)
        deadline = time.monotonic() + 5
        while not _gone(qemu.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _gone(qemu.pid), f"qemu-system-arm {qemu.pid} survived {how} of edgekd"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if qemu is not None and not _gone(qemu.pid):
            qemu.kill()
