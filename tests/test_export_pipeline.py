"""edgekd.export end to end (export_run, `edgekd export`) on a small digits CNN.

End-to-end export tests on a small digits CNN: every format and quantization, TFLite Micro artifacts, the
ONNX-file entry point, unsupported ops, bad input and atomic failure. Each export runs once.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from _train import cnn_recipe
from torch import nn

from edgekd.distill.runner import run_training
from edgekd.errors import EdgekdError
from edgekd.export import export_run
from edgekd.recipe import recipe_from_dict

KW = {"input_shape": (1, 8, 8), "num_classes": 10, "channels": (8, 16), "width": 1.0}


@pytest.fixture(scope="session")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from edgekd.data import load_data
    from edgekd.models import build_model, save_model

    root = tmp_path_factory.mktemp("run")
    splits = load_data("digits")
    torch.manual_seed(0)
    model = build_model("cnn", **KW)
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    x, y = torch.from_numpy(splits.train.x), torch.from_numpy(splits.train.y)
    g = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(400):
        idx = torch.randint(0, len(y), (64,), generator=g)
        loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    save_model(root / "model.pt", model, "cnn", KW)
    (root / "data.json").write_text(json.dumps(splits.describe()))
    return root


@pytest.fixture(scope="session")
def mcu_export(run_dir: Path) -> Path:
    return export_run(run_dir, target="tflite-micro")


@pytest.fixture(scope="session")
def tflite_export(run_dir: Path) -> Path:
    return export_run(run_dir, fmt="tflite", quant="all")


@pytest.fixture(scope="session")
def calib_npz(run_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from edgekd.data import load_data_from_info

    splits = load_data_from_info(json.loads((run_dir / "data.json").read_text()))
    p = tmp_path_factory.mktemp("calib") / "calib.npz"
    np.savez(p, x=splits.train.x[:120], y=splits.train.y[:120])
    return p


def cli_exit_code(main, argv: list[str]) -> int:  # noqa: ANN001
    """Run ``edgekd.cli.main``; 0 when it returns or exits with 0/None."""
    try:
        main(argv)
    except SystemExit as e:
        return 0 if e.code is None else int(e.code)
    return 0


def _compile_and_dump(folder: Path, expected: bytes) -> None:
    """Compile model_data.cc with a program that writes g_model back out; compare bytes and alignment."""
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


def _digest(folder: Path) -> dict[str, str]:
    return {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in sorted(folder.iterdir())}


# --- TFLite Micro target -------------------------------------------------------------------------
@pytest.mark.slow
def test_mcu_export_files_and_checks(mcu_export: Path, run_dir: Path) -> None:
    from edgekd.graph import read_tflite

    assert mcu_export == run_dir / "export" / "tflite-micro"
    for f in ("model.onnx", "model_int8.tflite", "model_data.cc", "model_data.h", "op_resolver.h", "arena.json",
              "export.json"):  # fmt: skip
        assert (mcu_export / f).is_file(), f
    rec = json.loads((mcu_export / "export.json").read_text())
    model = read_tflite(mcu_export / "model_int8.tflite")
    assert model.is_full_integer() and not model.is_hybrid()
    io = rec["tflite"]["int8"]
    assert io["input"]["dtype"] == "int8" and io["output"]["dtype"] == "int8"
    assert io["input"]["scale"] > 0 and isinstance(io["input"]["zero_point"], int)
    c = rec["checks"]
    assert c["fp32_max_abs_diff"] < 1e-3
    assert c["float_accuracy"] > 0.6
    assert abs(c["int8_accuracy"] - c["float_accuracy"]) < 0.05
    assert c["int8_top1_agreement"] > 0.9 and c["tflm_vs_litert_agreement"] > 0.9
    assert c["tflm_vs_litert_reference_kernels_agreement"] >= 0.99
    assert rec["fit"]["fits"] and rec["calibration"]["samples"] == 200
    arena = json.loads((mcu_export / "arena.json").read_text())
    assert set(arena["tflm"]) == {"head", "tail", "total"}
    assert arena["tflm"]["total"] == arena["tflm"]["head"] + arena["tflm"]["tail"]
    assert arena["recommended_bytes"] > arena["tflm"]["total"] and "64-bit" in arena["note"]
    assert rec["files"]["model_int8.tflite"]["bytes"] == (mcu_export / "model_int8.tflite").stat().st_size


def test_resolver_matches_model_ops(mcu_export: Path) -> None:
    import re

    from edgekd.export.micro import RESOLVER_METHODS
    from edgekd.graph import read_tflite

    ops = read_tflite(mcu_export / "model_int8.tflite").op_names()
    header = (mcu_export / "op_resolver.h").read_text()
    calls = re.findall(r"resolver\.(Add\w+)\(\)", header)
    assert sorted(calls) == sorted(RESOLVER_METHODS[o] for o in ops)
    assert "MicroMutableOpResolver<kNumOps>" in header and f"kNumOps = {len(ops)};" in header
    assert "AddDepthwiseConv2D" in calls  # the CNN is depthwise-separable


@pytest.mark.skipif(shutil.which("g++") is None, reason="needs g++")
def test_model_data_cc_compiles_to_tflite_bytes(mcu_export: Path, tmp_path: Path) -> None:
    for f in ("model_data.cc", "model_data.h"):
        shutil.copy(mcu_export / f, tmp_path / f)
    assert "alignas(16) const unsigned char g_model[]" in (tmp_path / "model_data.cc").read_text()
    _compile_and_dump(tmp_path, (mcu_export / "model_int8.tflite").read_bytes())


# --- formats -------------------------------------------------------------------------------------
@pytest.mark.slow
def test_tflite_all_quantizations(tflite_export: Path) -> None:
    from edgekd.graph import read_tflite

    rec = json.loads((tflite_export / "export.json").read_text())
    kinds = {
        q: read_tflite(tflite_export / f"model_{q}.tflite").kind for q in ("fp32", "fp16", "dynamic", "int8")
    }
    # dynamic-range quantization skips weight tensors under 1024 elements: this tiny CNN stays float
    assert kinds["dynamic"] in ("hybrid", "float")
    assert {q: kinds[q] for q in ("fp32", "fp16", "int8")} == {
        "fp32": "float",
        "fp16": "float16",
        "int8": "full_integer",
    }
    c = rec["checks"]
    assert c["fp32_max_abs_diff"] < 1e-3
    assert c["fp16_top1_agreement"] > 0.95 and c["dynamic_top1_agreement"] > 0.9
    assert c["int8_top1_agreement"] > 0.9
    assert rec["tflite"]["int8"]["input"]["dtype"] == "int8"


@pytest.mark.slow
def test_onnx_format_with_int8(run_dir: Path) -> None:
    import onnx

    out = export_run(run_dir, fmt="onnx", quant="int8", method="percentile")
    assert out == run_dir / "export" / "onnx"
    onnx.checker.check_model(onnx.load(str(out / "model_int8.onnx")))
    ops = {n.op_type for n in onnx.load(str(out / "model_int8.onnx")).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    rec = json.loads((out / "export.json").read_text())
    assert rec["onnx"]["opset"] >= 17 and rec["onnx_quantization"]["per_channel"]
    assert rec["checks"]["fp32_max_abs_diff"] < 1e-3
    assert rec["checks"]["int8_top1_agreement"] > 0.9
    # the same from the checkpoint file (data.json beside it gives the test split)
    out_pt = export_run(run_dir / "model.pt", fmt="onnx", out=run_dir.parent / "pt_export")
    rec_pt = json.loads((out_pt / "export.json").read_text())
    assert rec_pt["source"]["type"] == "checkpoint" and rec_pt["checks"]["eval_split"] == "test"


@pytest.mark.slow
def test_mobile_target_onnxruntime_and_litert(run_dir: Path) -> None:
    recipe = Path(__file__).resolve().parents[1] / "calibration" / "quick-100.yaml"
    out = export_run(run_dir, target="android-arm64", calibration=recipe)
    assert {"model.onnx", "model_int8.onnx", "model_int8.tflite", "export.json"} <= {
        p.name for p in out.iterdir()
    }
    assert not (out / "model_data.cc").exists()
    rec = json.loads((out / "export.json").read_text())
    assert rec["target"]["name"] == "android-arm64" and rec["format"] == "tflite"
    assert rec["calibration"]["samples"] == 100 and rec["calibration"]["recipe"]["selection"] == "stratified"
    assert rec["checks"]["int8_top1_agreement"] > 0.9 and rec["checks"]["onnx_int8_top1_agreement"] > 0.9


# --- entry points and errors -----------------------------------------------------------------------
@pytest.mark.slow
def test_onnx_file_entry_point(mcu_export: Path, calib_npz: Path, tmp_path: Path) -> None:
    src = tmp_path / "user.onnx"
    shutil.copy(mcu_export / "model.onnx", src)
    out = export_run(src, target="tflite-micro", calibration=calib_npz, out=tmp_path / "out")
    rec = json.loads((out / "export.json").read_text())
    # the last 20% of the labelled npz judge the export and are not used to calibrate
    assert rec["source"]["type"] == "onnx" and rec["calibration"]["samples"] == 96
    c = rec["checks"]
    assert c["eval_split"] == "calibration holdout" and c["eval_samples"] == 24
    assert c["reference"].startswith("ONNX") and c["float_accuracy"] > 0.6
    assert c["int8_runtime"] == "tflite-micro" and abs(c["int8_accuracy"] - c["float_accuracy"]) <= 2 / 24
    assert c["tflm_vs_litert_agreement"] > 0.9 and rec["task"]["task"] == "classification"
    assert (out / "model_data.cc").is_file()


class _ExpNet(nn.Module):
    """A model using exp(), which TFLite Micro cannot run in int8."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.act = _Exp()
        self.head = nn.Linear(4 * 8 * 8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.act(self.conv(x)).flatten(1))


class _Exp(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.exp(x)


class _GeluNet(_ExpNet):
    """GELU becomes Erf, which TFLite only has as a TensorFlow (Flex) op."""

    def __init__(self) -> None:
        super().__init__()
        self.act = nn.GELU()


@pytest.mark.slow
@pytest.mark.parametrize(("net", "pattern"), [(_ExpNet, r"EXP.*'act'"), (_GeluNet, r"Erf.*'act'.*Flex")])
def test_unsupported_op_names_layer(
    net: type[nn.Module], pattern: str, calib_npz: Path, tmp_path: Path
) -> None:
    from edgekd.export.onnx import export_torch

    src = tmp_path / "net.onnx"
    export_torch(net().eval(), (1, 8, 8), src)
    with pytest.raises(EdgekdError, match=pattern) as e:
        export_run(src, target="tflite-micro", calibration=calib_npz, out=tmp_path / "out")
    assert "\n" not in str(e.value)
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_fit_failure_keeps_previous_export(mcu_export: Path, run_dir: Path, tmp_path: Path) -> None:
    board = tmp_path / "tiny-board.yaml"
    board.write_text("name: tiny-board\nkind: mcu\ncpu: Cortex-M0\nclock_mhz: 16\nram_kb: 1\nflash_kb: 2\n"
                     "runtime: tflite-micro\nquantization: int8\n")  # fmt: skip
    out = tmp_path / "prev"
    shutil.copytree(mcu_export, out)
    before = _digest(out)
    with pytest.raises(
        EdgekdError, match=r"does not fit target tiny-board: RAM needs [\d,]+ B > 1,024 B.*flash needs"
    ):
        export_run(run_dir, target=board, out=out)
    assert _digest(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["prev", "tiny-board.yaml"]  # no temp folder left


def test_bad_inputs(run_dir: Path, tmp_path: Path, calib_npz: Path) -> None:
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x00garbage" * 10)
    with pytest.raises(EdgekdError, match="junk.onnx: corrupt or not an ONNX model"):
        export_run(junk, target="tflite-micro", calibration=calib_npz)
    txt = tmp_path / "notes.txt"
    txt.write_text("hello")
    with pytest.raises(EdgekdError, match="not a run folder"):
        export_run(txt, fmt="onnx")
    bad_run = tmp_path / "badrun"
    bad_run.mkdir()
    (bad_run / "model.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(EdgekdError, match=r"model.pt: .*(corrupt|not a PyTorch checkpoint)"):
        export_run(bad_run, fmt="onnx")
    with pytest.raises(EdgekdError, match="unknown target 'nope'"):
        export_run(run_dir, target="nope")
    with pytest.raises(EdgekdError, match="hybrid"):
        export_run(run_dir, target="arduino-nano-33-ble", quant="dynamic")
    wrong = tmp_path / "wrong.npz"
    np.savez(wrong, x=np.zeros((50, 8, 8, 1), np.float32))
    with pytest.raises(EdgekdError, match=r"wrong.npz.*expected \(N, 1, 8, 8\)"):
        export_run(run_dir, target="tflite-micro", calibration=wrong, out=tmp_path / "o")
    assert not (tmp_path / "o").exists()


def test_cli_one_line_error(run_dir: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    from edgekd.cli import main

    assert (
        cli_exit_code(
            main, ["export", str(run_dir), "--format", "onnx", "-o", str(tmp_path / "cli"), "--quiet"]
        )
        == 0
    )
    assert capsys.readouterr().out.strip() == str(tmp_path / "cli")
    assert (tmp_path / "cli" / "model.onnx").is_file()

    with pytest.raises(SystemExit) as e:
        main(["export", str(run_dir), "--target", "no-such-board"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: unknown target") and "\n" not in err


STAMP = re.compile(r"^ *\d+\.\ds (.+)$")  # a stage line: seconds since the export began, the stage


@pytest.mark.slow
def test_stage_lines_off_a_terminal(
    run_dir: Path, mcu_export: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """Logged to a file, each stage is one plain line (no colour, never wrapped); ``quiet`` prints none."""
    capsys.readouterr()
    export_run(run_dir, fmt="onnx", quant="int8", out=tmp_path / "onnx", quiet=False)
    export_run(mcu_export / "model_int8.tflite", target="tflite-micro", out=tmp_path / "micro", quiet=False)
    err = capsys.readouterr().err
    steps = [m.group(1) for m in map(STAMP.match, err.splitlines()) if m]  # between them: the checks tables
    assert "\x1b" not in err
    expected = ["exporting PyTorch model to ONNX", "ONNX ok", "onnxruntime static int8 quantization",
                "export written to", "loading model_int8.tflite in TFLite Micro (ops: CONV_2D, DEPTHWISE_CONV_2D, "
                "FULLY_CONNECTED", "TFLite Micro arena", "TFLite Micro files: model_data.cc", "export written to"]  # fmt: skip
    assert [s[: len(e)] for s, e in zip(steps, expected)] == expected and len(steps) == len(expected)
    export_run(mcu_export / "model_int8.tflite", target="tflite-micro", out=tmp_path / "quiet", quiet=True)
    assert capsys.readouterr().err == ""


@pytest.mark.slow
def test_rgb_onnx_converts_without_network(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """onnx2tf fetches sample images for 3-channel inputs unless given a local file: nothing may download."""
    import requests

    from edgekd.export.onnx import export_torch
    from edgekd.models import build_model

    def no_network(*args: object, **kwargs: object) -> None:
        raise AssertionError("network access during export")

    monkeypatch.setattr(requests, "get", no_network)
    src = tmp_path / "rgb.onnx"
    export_torch(
        build_model("cnn", input_shape=(3, 8, 8), num_classes=4, channels=(4, 8)).eval(), (3, 8, 8), src
    )
    out = export_run(src, fmt="tflite", quant="fp32", out=tmp_path / "out")
    rec = json.loads((out / "export.json").read_text())
    assert rec["input_layout"] == "nhwc" and rec["checks"]["fp32_max_abs_diff"] < 1e-3
    assert rec["checks"]["eval_split"] == "random"


@pytest.mark.slow
def test_export_all_networks_of_a_born_again_run(cnn_teacher, tmp_path, run_cli):
    r = cnn_recipe(teacher={"path": str(cnn_teacher)}, method={"name": "kd"}, scheme={"name": "born-again", "params": {"generations": 2}},
                   train={"epochs": 1, "batch_size": 64, "lr": 0.01, "optimizer": "adam"})  # fmt: skip
    run = run_training(recipe_from_dict(r), tmp_path, distill=True, progress=False)
    code, err = run_cli(["export", str(run.root), "--format", "onnx", "--all-networks", "--quiet"])
    assert code == 0, err
    for gen in ("gen-1", "gen-2"):
        assert (run.root / "export" / f"onnx-{gen}" / "model.onnx").exists()
