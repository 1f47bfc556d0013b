"""edgekd.export on the networks TinyML users build, from ONNX to tflite-micro.

Networks TinyML users build, each made here with random weights, exported from ONNX to tflite-micro with
TFLite Micro running the int8 file: DS-CNN, ResNet-8, FC autoencoder (reconstruction checks in export and
profile), MobileNetV3 squeeze-and-excitation (hardswish, hardsigmoid), Conv1d, LSTM, GRU. Also: the one
input quantization rule against the interpreter, and a converter failure naming its node and keeping its
log.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from edgekd.errors import EdgekdError
from edgekd.export import export_run
from edgekd.export.onnx import export_torch


class DSCNN(nn.Module):
    """Keyword-spotting depthwise-separable CNN (MLPerf Tiny KWS shape, narrowed)."""

    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = [
            nn.Conv2d(1, 16, (5, 3), stride=2, padding=(2, 1)),
            nn.BatchNorm2d(16),
            nn.ReLU(),
        ]
        for _ in range(2):
            layers += [nn.Conv2d(16, 16, 3, padding=1, groups=16), nn.BatchNorm2d(16), nn.ReLU(),
                       nn.Conv2d(16, 16, 1), nn.BatchNorm2d(16), nn.ReLU()]  # fmt: skip
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(16, 12)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean((2, 3)))


class _Res(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.a = nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1), nn.BatchNorm2d(cout), nn.ReLU(),
                               nn.Conv2d(cout, cout, 3, 1, 1), nn.BatchNorm2d(cout))  # fmt: skip
        self.skip = nn.Conv2d(cin, cout, 1, stride) if stride != 1 or cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.a(x) + self.skip(x))


class ResNet8(nn.Module):
    """MLPerf Tiny image-classification ResNet-8 shape (narrowed, 16x16 input)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, 1, 1), nn.BatchNorm2d(8), nn.ReLU())
        self.blocks = nn.Sequential(_Res(8, 8, 1), _Res(8, 16, 2), _Res(16, 16, 2))
        self.head = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(x)).mean((2, 3)))


class FCAutoencoder(nn.Module):
    """MLPerf Tiny anomaly-detection autoencoder shape: 640 in and out (narrowed hidden layers)."""

    def __init__(self, n: int = 640) -> None:
        super().__init__()
        dims = [n, 64, 64, 8, 64, 64]
        layers: list[nn.Module] = []
        for a, b in zip(dims[:-1], dims[1:]):
            layers += [nn.Linear(a, b), nn.BatchNorm1d(b), nn.ReLU()]
        self.body = nn.Sequential(*layers, nn.Linear(64, n))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class SEBlock(nn.Module):
    """MobileNetV3 block: hardswish expansion, depthwise, squeeze-and-excitation with hardsigmoid."""

    def __init__(self) -> None:
        super().__init__()
        self.expand = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1), nn.BatchNorm2d(16), nn.Hardswish())
        self.dw = nn.Sequential(nn.Conv2d(16, 16, 3, 1, 1, groups=16), nn.BatchNorm2d(16), nn.Hardswish())
        self.se = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(16, 4, 1), nn.ReLU(), nn.Conv2d(4, 16, 1),
                                nn.Hardsigmoid())  # fmt: skip
        self.head = nn.Linear(16, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.dw(self.expand(x))
        return self.head((x * self.se(x)).mean((2, 3)))


class Conv1dNet(nn.Module):
    """A sensor classifier: (channels, time) input."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv1d(6, 16, 5, padding=2), nn.ReLU(), nn.MaxPool1d(2),
                                  nn.Conv1d(16, 16, 3, padding=1), nn.ReLU())  # fmt: skip
        self.head = nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x).mean(2))


class RecurrentNet(nn.Module):
    """batch_first LSTM/GRU classifier over time steps x 8 features; the last step's state is classified."""

    def __init__(self, cell: type[nn.Module]) -> None:
        super().__init__()
        self.rnn = cell(8, 16, batch_first=True)
        self.head = nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y, _ = self.rnn(x)
        return self.head(y[:, -1])


ZOO = {
    "ds_cnn": (DSCNN, (1, 20, 10)),
    "resnet8": (ResNet8, (3, 16, 16)),
    "se_hardswish": (SEBlock, (3, 16, 16)),
    "conv1d": (Conv1dNet, (6, 32)),
    "lstm": (lambda: RecurrentNet(nn.LSTM), (12, 8)),  # 12 steps: more than TFLM's 10 concat inputs
    "gru": (lambda: RecurrentNet(nn.GRU), (12, 8)),
}


def _build(name: str, folder: Path) -> tuple[Path, np.ndarray]:
    """The network as ONNX (batch 1) and 150 inputs from the distribution it is calibrated on."""
    factory, shape = ZOO.get(name, (FCAutoencoder, (640,)))
    torch.manual_seed(0)
    model = factory().eval()
    path = folder / f"{name}.onnx"
    export_torch(model, shape, path)
    x = np.random.default_rng(1).standard_normal((150, *shape)).astype(np.float32)
    return path, x


@pytest.mark.slow
@pytest.mark.parametrize("name", list(ZOO))
def test_zoo_classifier_exports_to_tflite_micro(name: str, tmp_path: Path) -> None:
    onnx_path, x = _build(name, tmp_path)
    calib = tmp_path / "calib.npz"
    np.savez(calib, x=x)
    out = export_run(onnx_path, target="tflite-micro", calibration=calib, out=tmp_path / "out")
    rec = json.loads((out / "export.json").read_text())
    c = rec["checks"]
    ops = rec["tflite"]["int8"]["ops"]
    assert rec["route"]["used"] == "onnx2tf" and rec["task"]["task"] == "classification"
    assert c["int8_runtime"] == "tflite-micro" and c["tflm_samples"] == c["eval_samples"] == 30
    assert c["eval_split"] == "calibration holdout" and rec["calibration"]["samples"] == 120
    # TFLite Micro runs the int8 file, with the same integer math as LiteRT's reference kernels
    assert c["tflm_vs_litert_reference_kernels_agreement"] == 1.0
    assert c["int8_top1_agreement"] >= 0.8, c
    assert "RELU_0_TO_1" not in ops and rec["micro"]["arena"]["tflm"]["total"] > 0
    if name in ("lstm", "gru"):
        assert {d["op"] for d in rec["onnx"]["lowered"]} == {name.upper()}
        assert "UNIDIRECTIONAL_SEQUENCE_LSTM" not in ops and {"FULLY_CONNECTED", "LOGISTIC", "TANH"} <= set(
            ops
        )
    if name == "se_hardswish":
        assert "HARD_SWISH" in ops and {"HardSigmoid", "Conv"} <= {d["op"] for d in rec["onnx"]["lowered"]}


@pytest.mark.slow
def test_autoencoder_reconstruction_checks_in_export_and_profile(tmp_path: Path) -> None:
    from edgekd.profile import ProfileOptions, profile_files

    onnx_path, x = _build("fc_autoencoder", tmp_path)
    calib, test = tmp_path / "calib.npz", tmp_path / "test.npz"
    np.savez(calib, x=x[:100], task=np.array("reconstruction"))
    y = np.r_[np.zeros(40), np.ones(10)].astype(np.int64)
    x_test = np.concatenate([x[100:140], 4.0 * x[140:150]])  # the last ten are anomalies: larger inputs
    np.savez(test, x=x_test, y=y)  # no task key: inferred from the 640-in, 640-out shape in profile
    out = export_run(
        onnx_path, target="tflite-micro", calibration=calib, eval_data=test, out=tmp_path / "out"
    )
    rec = json.loads((out / "export.json").read_text())
    c = rec["checks"]
    assert rec["task"] == {"task": "reconstruction", "source": "npz array 'task'"}
    assert rec["calibration"]["samples"] == 100 and c["eval_split"] == "eval npz test.npz"
    assert "float_accuracy" not in c and "int8_top1_agreement" not in c and c["float_score_mean"] > 0
    assert c["int8_runtime"] == "tflite-micro" and c["tflm_samples"] == 50
    assert 0 < c["int8_max_abs_error"] < 1.0 and c["int8_sqnr_db"] > 10
    assert c["int8_score_spearman"] > 0.9 and c["litert_reference_int8_score_spearman"] > 0.9
    rep = profile_files(
        [out / "model_int8.tflite"], data=test, teacher=onnx_path, options=ProfileOptions(runs=2, warmup=0)
    )
    t_row, rows = rep["artifacts"][0], rep["artifacts"][1:]
    assert t_row["accuracy"]["auc"] == pytest.approx(1.0)
    for row in rows:
        a = row["accuracy"]
        assert row["error"] is None and a["auc"] == pytest.approx(1.0), row
        assert a["vs_teacher"]["score_spearman"] > 0.9 and a["vs_teacher"]["sqnr_db"] > 10


def test_input_quantization_matches_tflite_micro(tmp_path: Path) -> None:
    """A float-input model whose first op is QUANTIZE: TFLM's integers equal :func:`quantize` on ties too."""
    import flatbuffers
    from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as s

    from edgekd.graph import run_tflm
    from edgekd.graph.quant import quantize

    scale, zp = 0.5, 3
    m = s.ModelT()
    m.version = 3
    code = s.OperatorCodeT()
    code.builtinCode = code.deprecatedBuiltinCode = s.BuiltinOperator.QUANTIZE
    m.operatorCodes = [code]
    m.buffers = [s.BufferT(), s.BufferT(), s.BufferT()]
    t_in, t_out = s.TensorT(), s.TensorT()
    t_in.shape, t_in.type, t_in.buffer, t_in.name = [1, 16], s.TensorType.FLOAT32, 1, b"x"
    t_out.shape, t_out.type, t_out.buffer, t_out.name = [1, 16], s.TensorType.INT8, 2, b"q"
    q = s.QuantizationParametersT()
    q.scale, q.zeroPoint = [scale], [zp]
    t_out.quantization = q
    op = s.OperatorT()
    op.opcodeIndex, op.inputs, op.outputs = 0, [0], [1]
    g = s.SubGraphT()
    g.tensors, g.inputs, g.outputs, g.operators = [t_in, t_out], [0], [1], [op]
    m.subgraphs = [g]
    b = flatbuffers.Builder(1024)
    b.Finish(m.Pack(b), file_identifier=b"TFL3")
    data = bytes(b.Output())
    # halves (ties) of both signs, values that clamp, and ordinary values
    x = np.array([[-2.25, -1.75, -1.25, -0.75, -0.25, 0.25, 0.75, 1.25, 1.75, 2.25, 0.1, -0.1, 70.0, -70.0,
                   0.2499, -0.2501]], np.float32)  # fmt: skip
    got = run_tflm(data, x)
    ours = quantize(x, scale, zp, np.int8)
    assert got.dtype == np.int8 and np.array_equal(got, ours), (got, ours)
    assert not np.array_equal(ours, np.clip(np.round(x / scale + zp), -128, 127))  # numpy's rule differs


@pytest.mark.slow
def test_converter_failure_names_node_and_keeps_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the LSTM lowering onnx2tf cannot convert the node: one line naming it, the full log kept."""
    from edgekd.export import lower

    onnx_path, x = _build("lstm", tmp_path)
    calib = tmp_path / "calib.npz"
    np.savez(calib, x=x[:20])
    monkeypatch.setattr(lower, "LOWERINGS", {})
    with pytest.raises(EdgekdError) as e:
        export_run(onnx_path, target="tflite-micro", calibration=calib, out=tmp_path / "out")
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(str(onnx_path))
    assert "ONNX LSTM node" in msg and "'rnn'" in msg, msg
    log = tmp_path / "out.onnx2tf.log"
    assert log.is_file() and "Traceback" in log.read_text() and str(log) in msg
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_installed_wheel_ships_targets_and_calibration(tmp_path: Path) -> None:
    """A non-editable install (the built wheel, outside the source tree) finds targets/ and calibration/."""
    import os
    import shutil
    import subprocess
    import sys

    repo = tmp_path / "src"  # a copy: building in the checkout would leave build/ behind
    skip = shutil.ignore_patterns(".venv", ".git", "build", "runs", "*.egg-info", "__pycache__", "*_cache")
    shutil.copytree(Path(__file__).resolve().parents[1], repo, symlinks=True, ignore=skip)
    wheel_dir, site = tmp_path / "wheel", tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(wheel_dir),
                    str(repo)], check=True, capture_output=True, cwd=tmp_path)  # fmt: skip
    wheel = next(wheel_dir.glob("edgekd-*.whl"))
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site), str(wheel)],
                   check=True, capture_output=True, cwd=tmp_path)  # fmt: skip
    code = (
        "import edgekd, json; from edgekd.targets import list_targets; "
        "from edgekd.export.quantize import load_recipe, calibration_dirs; "
        "print(json.dumps([edgekd.__file__, [t.name for t in list_targets()], load_recipe().name, "
        "[str(d) for d in calibration_dirs() if (d / 'default.yaml').is_file()]]))"
    )
    env = {**os.environ, "PYTHONPATH": str(site)}
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True, cwd=tmp_path, env=env
    )
    path, targets, recipe, dirs = json.loads(out.stdout)
    assert path.startswith(str(site))
    assert {"tflite-micro", "arduino-nano-33-ble", "android-arm64"} <= set(targets)
    assert recipe == "default" and dirs and all(d.startswith(str(site)) for d in dirs)
    cli = subprocess.run([sys.executable, "-m", "edgekd.cli", "targets"], capture_output=True, text=True, cwd=tmp_path,
                         env=env)  # fmt: skip
    assert cli.returncode == 0 and "arduino-nano-33-ble" in cli.stdout
    # an export with the default calibration recipe, found inside the installed package
    from edgekd.data import load_data
    from edgekd.models import build_model, save_model

    run = tmp_path / "run"
    run.mkdir()
    torch.manual_seed(0)
    kw = {"input_shape": (1, 8, 8), "num_classes": 10, "channels": (4, 8)}
    save_model(run / "model.pt", build_model("cnn", **kw), "cnn", kw)
    (run / "data.json").write_text(json.dumps(load_data("digits").describe()))
    exp = subprocess.run([sys.executable, "-m", "edgekd.cli", "export", str(run), "--target", "tflite-micro", "--quiet"],
                         capture_output=True, text=True, cwd=tmp_path, env=env)  # fmt: skip
    assert exp.returncode == 0, exp.stderr[-2000:]
    rec = json.loads((run / "export" / "tflite-micro" / "export.json").read_text())
    assert rec["calibration"]["recipe"]["name"] == "default" and rec["calibration"]["samples"] == 200


class _StridedDW(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.dw = nn.Conv2d(4, 4, 3, stride=2, padding=1, groups=4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dw(x)


class _BiRNN(nn.Module):
    def __init__(self, cell: type[nn.Module]) -> None:
        super().__init__()
        self.rnn = cell(8, 6, batch_first=True, bidirectional=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.rnn(x)[0]


@pytest.mark.parametrize(
    ("net", "shape", "op"),
    [(_StridedDW, (4, 8, 8), "Conv"), (lambda: _BiRNN(nn.LSTM), (5, 8), "LSTM"),
     (lambda: _BiRNN(nn.GRU), (5, 8), "GRU"), (nn.Hardsigmoid, (4, 3, 3), "HardSigmoid")],
)  # fmt: skip
@pytest.mark.slow
def test_lowering_is_exact(net: Any, shape: tuple[int, ...], op: str, tmp_path: Path) -> None:
    """Each ONNX rewrite gives the same outputs (onnxruntime) with the op gone or, for Conv, less padding."""
    import onnx

    from edgekd.export.lower import lower
    from edgekd.runtimes import run_outputs

    torch.manual_seed(0)
    path = tmp_path / "m.onnx"
    export_torch(net().eval(), shape, path)
    model, done = lower(onnx.load(str(path)), str(path))
    assert [d["op"] for d in done] == [op]
    low = tmp_path / "low.onnx"
    onnx.save(model, str(low))
    x = np.random.default_rng(0).standard_normal((4, *shape)).astype(np.float32)
    assert np.abs(run_outputs("onnxruntime", low, x) - run_outputs("onnxruntime", path, x)).max() < 1e-5
    ops = {n.op_type for n in model.graph.node}
    if op == "Conv":
        pads = next(
            a.ints for n in model.graph.node if n.op_type == "Conv" for a in n.attribute if a.name == "pads"
        )
        assert list(pads) == [1, 1, 0, 0]  # the trailing row/column no stride-2 window reads is gone
    else:
        assert op not in ops


@pytest.mark.slow
def test_route_fallback_and_record(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A failing first route falls back to the next; export.json records both attempts and the route used."""
    from edgekd.export import routes

    def broken(ctx: Any, quants: list[str]) -> dict[str, bytes]:
        raise EdgekdError("boom: converter crashed")

    monkeypatch.setitem(routes.ROUTES, "broken", broken)
    monkeypatch.setitem(routes.ROUTE_QUANTS, "broken", ("fp32", "int8"))
    monkeypatch.setattr(routes, "DEFAULT_ORDER", ("broken", "onnx2tf"))
    onnx_path, x = _build("conv1d", tmp_path)
    calib = tmp_path / "calib.npz"
    np.savez(calib, x=x[:40])
    out = export_run(onnx_path, target="tflite-micro", calibration=calib, out=tmp_path / "out")
    rec = json.loads((out / "export.json").read_text())
    attempts = rec["route"]["attempts"]
    assert rec["route"]["used"] == "onnx2tf" and rec["tflite"]["int8"]["route"] == "onnx2tf"
    assert [a["route"] for a in attempts] == ["broken", "onnx2tf"]
    assert not attempts[0]["ok"] and "boom" in attempts[0]["error"] and attempts[1]["ok"]


@pytest.mark.slow
def test_litert_torch_route(tmp_path: Path) -> None:
    """The second route on a PyTorch module: full-integer int8 that TFLite Micro runs (or a clear skip)."""
    from edgekd.export.litert import available

    torch.manual_seed(0)
    model = SEBlock().eval()
    x = np.random.default_rng(1).standard_normal((60, 3, 16, 16)).astype(np.float32)
    calib = tmp_path / "calib.npz"
    np.savez(calib, x=x)
    if available() is not None:  # the optional packages are not installed: the route says so in one line
        with pytest.raises(EdgekdError, match=r"litert-torch: .*not installed.*edgekd\[litert\]"):
            export_run(model, input_shape=(3, 16, 16), target="tflite-micro", calibration=calib, route="litert-torch",
                       out=tmp_path / "out")  # fmt: skip
        return
    out = export_run(model, input_shape=(3, 16, 16), target="tflite-micro", calibration=calib, route="litert-torch",
                     out=tmp_path / "out")  # fmt: skip
    rec = json.loads((out / "export.json").read_text())
    assert rec["route"]["used"] == "litert-torch" and rec["input_layout"] == "nchw"
    assert rec["checks"]["int8_runtime"] == "tflite-micro" and rec["checks"]["int8_top1_agreement"] >= 0.8
    assert "RELU_0_TO_1" not in rec["tflite"]["int8"]["ops"]
