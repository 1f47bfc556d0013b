"""edgekd.export, fast units needing no conversion: targets, calibration, C array, resolver, fit."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from edgekd.errors import EdgekdError
from edgekd.export import micro
from edgekd.export.quantize import CalibrationRecipe, load_recipe, read_npz, select
from edgekd.targets import Target, fit_check, list_targets, load_target

REQUIRED_TARGETS = {"tflite-micro", "arduino-nano-33-ble", "stm32f746-disco", "nucleo-l4r5zi", "esp32-s3",
                    "rp2040-pico", "raspberry-pi-4", "android-arm64"}  # fmt: skip


def test_targets_listed_and_valid() -> None:
    names = {t.name for t in list_targets()}
    assert names >= REQUIRED_TARGETS
    nano = load_target("arduino-nano-33-ble")
    assert nano.ram_bytes == 256 * 1024 and nano.flash_bytes == 1024 * 1024 and nano.is_mcu
    assert nano.clock_mhz == 64 and nano.cycles_per_mac and nano.cycles_per_mac_source
    for t in list_targets():
        if (
            t.kind == "mcu"
            and t.name != "tflite-micro"
            and not t.cycles_per_mac_source.startswith("emulated")
        ):
            assert t.cycles_per_mac is not None, t.name
    generic = load_target("tflite-micro")
    assert generic.ram_bytes is None and generic.flash_bytes is None
    assert not load_target("android-arm64").is_mcu


def test_target_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(EdgekdError, match="unknown target 'no-such-board'"):
        load_target("no-such-board")
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "name: b\nkind: mcu\ncpu: x\nclock_mhz: 1\nram_kb: 1\nflash_kb: 1\nruntime: tflite-micro\n"
    )
    with pytest.raises(EdgekdError, match="missing key.*quantization"):
        load_target(bad)
    bad.write_text(bad.read_text() + "quantization: int8\nram: 3\n")
    with pytest.raises(EdgekdError, match="unknown key.*ram"):
        load_target(bad)
    # a user board found through $EDGEKD_TARGETS_DIR
    d = tmp_path / "boards"
    d.mkdir()
    (d / "myboard.yaml").write_text(
        "name: myboard\nkind: mcu\ncpu: Cortex-M33\nclock_mhz: 100\nram_kb: 128\nflash_kb: 512\n"
        "runtime: tflite-micro\nquantization: int8\n"
    )
    monkeypatch.setenv("EDGEKD_TARGETS_DIR", str(d))
    assert load_target("myboard").ram_bytes == 128 * 1024
    assert "myboard" in {t.name for t in list_targets()}


def test_targets_command(capsys: pytest.CaptureFixture[str]) -> None:
    from edgekd.cli import main

    assert cli_exit_code(main, ["targets", "--json"]) == 0
    assert "nucleo-l4r5zi" in capsys.readouterr().out


def cli_exit_code(main, argv: list[str]) -> int:  # noqa: ANN001
    """Run ``edgekd.cli.main``; 0 when it returns or exits with 0/None."""
    try:
        main(argv)
    except SystemExit as e:
        return 0 if e.code is None else int(e.code)
    return 0


def test_calibration_recipe_and_selection() -> None:
    r = load_recipe()
    assert r.num_samples == 200 and r.selection == "stratified" and r.split == "train"
    y = np.repeat(np.arange(10), 50)
    x = np.arange(500, dtype=np.float32)[:, None]
    picked = select(x, y, CalibrationRecipe(num_samples=200))
    counts = np.bincount(y[picked[:, 0].astype(int)], minlength=10)
    assert len(picked) == 200 and (counts == 20).all()


def test_calibration_npz_errors(tmp_path: Path) -> None:
    shape = (1, 8, 8)
    good = tmp_path / "good.npz"
    np.savez(good, x=np.zeros((120, *shape), np.float32))
    assert read_npz(good, shape).x.shape == (120, *shape)
    wrong_shape = tmp_path / "shape.npz"
    np.savez(wrong_shape, x=np.zeros((10, 8, 8, 1), np.float32))
    with pytest.raises(EdgekdError, match=r"shape.npz.*expected \(N, 1, 8, 8\)"):
        read_npz(wrong_shape, shape)
    wrong_dtype = tmp_path / "dtype.npz"
    np.savez(wrong_dtype, x=np.zeros((10, *shape), np.uint8))
    with pytest.raises(EdgekdError, match="dtype.npz.*dtype uint8"):
        read_npz(wrong_dtype, shape)
    wrong_range = tmp_path / "range.npz"
    np.savez(wrong_range, x=np.full((10, *shape), 255.0, np.float32))
    with pytest.raises(EdgekdError, match="range.npz.*training preprocessing"):
        read_npz(wrong_range, shape, ref_range=(-1.0, 3.0))
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"not a zip file")
    with pytest.raises(EdgekdError, match="junk.npz: cannot read"):
        read_npz(junk, shape)


def _board(ram_kb: float | None, flash_kb: float | None) -> Target:
    return Target("board", "mcu", "M4", 64, None if ram_kb is None else int(ram_kb * 1024),
                  None if flash_kb is None else int(flash_kb * 1024), ("tflite-micro",), "int8")  # fmt: skip


def test_fit_check_both_ways() -> None:
    # one rule: RAM = the TFLM arena total (inputs/outputs live in it), flash = model bytes
    ok = fit_check(_board(256, 1024), model_bytes=50_000, arena_total=20_000)
    assert ok["fits"] and all(r["ok"] for r in ok["rows"])
    assert ok["rows"][0]["needed"] == 20_000 and "arena" in ok["rule"]
    bad = fit_check(_board(16, 32), model_bytes=50_000, arena_total=20_000)
    assert not bad["fits"]
    msg = micro.fit_error(bad)
    assert "RAM needs 20,000 B > 16,384 B" in msg and "flash needs 50,000 B > 32,768 B" in msg
    unlimited = fit_check(_board(None, None), 10**9, 10**9)
    assert unlimited["fits"]
    phone = Target("phone", "mobile", "A76", 2000, None, None, ("litert",), "fp32")
    not_mcu = fit_check(phone, 10**6, 10**6)
    assert not_mcu["fits"] is None and not_mcu["rows"] == [] and "not a TFLite Micro arena" in not_mcu["note"]
    from rich.console import Console

    Console(file=open("/dev/null", "w")).print(micro.fit_table(bad))  # noqa: SIM115


def test_resolver_mapping() -> None:
    h = micro.op_resolver_header(["DEPTHWISE_CONV_2D", "CONV_2D", "FULLY_CONNECTED"])
    assert "MicroMutableOpResolver<kNumOps>" in h and "kNumOps = 3" in h
    assert "AddDepthwiseConv2D()" in h and "AddConv2D()" in h and "AddFullyConnected()" in h
    with pytest.raises(EdgekdError, match="TOPK_V2"):
        micro.resolver_methods(["CONV_2D", "TOPK_V2"])


@pytest.mark.skipif(shutil.which("g++") is None, reason="needs g++")
def test_c_array_compiles_to_same_bytes(tmp_path: Path) -> None:
    payload = bytes(range(256)) * 3 + b"\x01\x02\x03"
    h, cc = micro.c_array_files(payload)
    (tmp_path / "model_data.h").write_text(h)
    (tmp_path / "model_data.cc").write_text(cc)
    _compile_and_dump(tmp_path, payload)


def _compile_and_dump(folder: Path, expected: bytes) -> None:
    """Compile model_data.cc with a small program that writes g_model back out; compare bytes and alignment."""
    (folder / "dump.cc").write_text(
        '#include <cstdio>\n#include <cstdint>\n#include "model_data.h"\n'
        "int main() { if (reinterpret_cast<uintptr_t>(g_model) % 16) return 3;\n"
        "  fwrite(g_model, 1, g_model_len, stdout); return 0; }\n"
    )
    exe = folder / "dump"
    subprocess.run(["g++", "-std=c++17", "-O0", "-o", str(exe), str(folder / "dump.cc"), str(folder / "model_data.cc")],
                   check=True, capture_output=True)  # fmt: skip
    out = subprocess.run([str(exe)], check=True, capture_output=True).stdout
    assert out == expected


def test_calibration_warns_below_100(tmp_path: Path) -> None:
    from edgekd.export.quantize import calibration_samples

    p = tmp_path / "few.npz"
    np.savez(p, x=np.zeros((50, 1, 8, 8), np.float32))
    samples, info = calibration_samples(p, (1, 8, 8), None)
    x = samples.x
    assert len(x) == 50 and "50 calibration samples" in info["warning"]
    with pytest.raises(EdgekdError, match="pass --calibration data.npz"):
        calibration_samples(None, (1, 8, 8), None)


def test_task_record_and_inference(tmp_path: Path) -> None:
    from edgekd.data.evalset import normalize_task
    from edgekd.export.quantize import read_npz
    from edgekd.export.source import infer_task

    assert normalize_task(np.array("anomaly"), "x") == "reconstruction"
    assert normalize_task(b"classification", "x") == "classification" and normalize_task(None, "x") is None
    with pytest.raises(EdgekdError, match="data.json: task 'segmentation' is not one of"):
        normalize_task("segmentation", "data.json")
    assert infer_task((640,), 640)[0] == "reconstruction" and infer_task((1, 8, 8), 10)[0] == "classification"
    p = tmp_path / "ae.npz"
    np.savez(p, x=np.zeros((4, 6), np.float32), y=np.array([0, 0, 1, 0]), task=np.array("reconstruction"))
    s = read_npz(p, (6,))
    assert s.task == "reconstruction" and s.y.tolist() == [0, 0, 1, 0]
    np.savez(p, x=np.zeros((4, 6), np.float32), y=np.zeros(3, np.int64))
    with pytest.raises(EdgekdError, match="ae.npz: array 'y' must hold one integer label per row"):
        read_npz(p, (6,))


def test_export_options_are_frozen_and_refuse_unknown_names():
    import dataclasses

    from edgekd.export import ExportOptions

    base = ExportOptions(target="tflite-micro")
    changed = ExportOptions.of(base, quant="int8")
    assert changed.target == "tflite-micro" and changed.quant == "int8" and base.quant is None
    with pytest.raises(dataclasses.FrozenInstanceError):
        base.quant = "fp32"  # type: ignore[misc]
    with pytest.raises(TypeError):
        ExportOptions.of(base, quantization="int8")


def test_run_outputs_moves_a_channels_last_map_back_to_nchw(monkeypatch) -> None:
    """onnx2tf moves channels last at the input and at a 4-D output (a detector's maps): the checks
    compare with PyTorch's NCHW, so the output is moved back; 2-D outputs are left alone."""
    import numpy as np

    from edgekd import runtimes

    nchw = np.arange(2 * 3 * 4 * 5, dtype=np.float32).reshape(2, 3, 4, 5)

    class Fake:
        input_shape = (1, 8, 8, 1)
        channels_last = True

        def __init__(self, out: np.ndarray) -> None:
            self.out = out

        def predict(self, x: np.ndarray) -> np.ndarray:
            return self.out

        def close(self) -> None:
            pass

    x = np.zeros((2, 1, 8, 8), np.float32)
    monkeypatch.setattr(runtimes, "open_runtime", lambda name, path: Fake(np.moveaxis(nchw, 1, -1)))
    assert np.array_equal(runtimes.run_outputs("litert", "m.tflite", x), nchw.reshape(2, -1))
    logits = np.arange(20, dtype=np.float32).reshape(2, 10)
    monkeypatch.setattr(runtimes, "open_runtime", lambda name, path: Fake(logits))
    assert np.array_equal(runtimes.run_outputs("litert", "m.tflite", x), logits)
