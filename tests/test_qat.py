"""Quantization-aware training (issue 27): TFLite's int8 rules simulated in PyTorch, a `train.qat` stage
that learns activation ranges, and an export that writes them into the int8 model so that TFLite Micro
computes what the student was trained on."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from edgekd.distill import qat
from edgekd.errors import EdgekdError
from edgekd.graph import requantize as rq
from edgekd.models import build_model


def test_weight_fake_quant_is_tflite_per_channel_symmetric() -> None:
    w = torch.randn(6, 3, 3, 3) * torch.tensor([0.01, 0.1, 1.0, 3.0, 0.5, 2.0]).view(6, 1, 1, 1)
    scale = w.abs().reshape(6, -1).amax(1).view(6, 1, 1, 1) / 127
    expected = torch.clamp(torch.round(w / scale), -127, 127) * scale
    got = qat.fake_quant_weight(w)
    assert torch.allclose(got, expected, atol=1e-7, rtol=0)
    assert got.reshape(6, -1).abs().amax(1).tolist() == pytest.approx(w.reshape(6, -1).abs().amax(1).tolist())
    levels = got / scale
    assert torch.allclose(levels, torch.round(levels), atol=1e-4) and float(
        levels.abs().max()
    ) == pytest.approx(127)


@pytest.mark.parametrize("lo,hi", [(0.0, 10.2), (-1.0, 3.0), (-7.3, 0.2), (0.5, 2.0), (-2.0, -0.5)])
def test_activation_qparams_equal_the_export_rule(lo: float, hi: float) -> None:
    scale, zero = qat.activation_qparams(torch.tensor(lo), torch.tensor(hi))
    s, z = rq.qparams_for_range(lo, hi)
    assert float(scale) == pytest.approx(s, rel=1e-6) and int(zero) == z


def test_activation_fake_quant_has_a_straight_through_gradient() -> None:
    x = torch.linspace(-2, 6, 101, requires_grad=True)
    y = qat.fake_quant_activation(x, torch.tensor(-1.0), torch.tensor(4.0))
    y.sum().backward()
    inside = (x.detach() >= -1.0) & (x.detach() <= 4.0)
    assert torch.equal(x.grad, inside.float())  # 1 inside the range, 0 where it clips
    assert len(torch.unique(y.detach())) <= 256 and float(y.max()) <= 4.0 + 1e-6


def test_points_are_where_tflite_keeps_int8_tensors() -> None:
    cnn = build_model("cnn", input_shape=[1, 8, 8], num_classes=10, channels=[4, 8], depthwise=True)
    points = qat.quant_points(cnn, torch.zeros(2, 1, 8, 8))
    kinds = {type(cnn.get_submodule(p)).__name__ for p in points}
    assert kinds <= {"ReLU", "ReLU6", "AdaptiveAvgPool2d"}  # conv -> bn -> relu is one tensor, after the relu
    assert "classifier" not in points  # the model output keeps its calibrated range
    mlp = build_model("mlp", input_shape=[64], num_classes=10, hidden=[32, 16])
    pts = qat.quant_points(mlp, torch.zeros(2, 64))
    assert len(pts) == 2 and all(isinstance(mlp.get_submodule(p), nn.ReLU) for p in pts)
    ae = build_model("fc-ae", input_shape=[32, 38], hidden=[64], latent=16)  # output = last Linear, reshaped
    assert qat.quant_points(ae, torch.zeros(2, 32, 38)) == ["encoder.1", "encoder.3", "decoder.1"]


def test_attach_and_detach_leave_the_state_dict_alone() -> None:
    model = build_model("mlp", input_shape=[64], num_classes=10, hidden=[32])
    keys = list(model.state_dict())
    x = torch.randn(8, 64)
    ref = model(x)
    q = qat.FakeQuantizer(model, x)
    q.attach(model)
    model.train()
    out = model(x)
    assert list(model.state_dict()) == keys and not torch.equal(out, model.eval()(x) * 0 + ref)
    assert bool(q.seen.all()) and "_student" not in dict(q.named_modules())
    q.detach()
    assert torch.equal(model.eval()(x), ref) and list(model.state_dict()) == keys


def test_bad_qat_record_is_one_line() -> None:
    ok = {"format": qat.QAT_FORMAT, "points": [{"module": "features.0", "range": [-1.0, 2.0]}]}
    assert qat.read_qat_record(ok, "s.pt") == {"features.0": (-1.0, 2.0)}
    for bad in ({"format": "x"}, {**ok, "points": 3}, {**ok, "points": [{"module": 1, "range": [0, 1]}]},
                {**ok, "points": [{"module": "a", "range": [2.0, 1.0]}]},
                {**ok, "points": [{"module": "a", "range": [0.0, float("nan")]}]}):  # fmt: skip
        with pytest.raises(EdgekdError, match=r"^s\.pt: key 'meta\.qat"):
            qat.read_qat_record(bad, "s.pt")


def test_qat_must_be_the_last_stage(tmp_path) -> None:
    from _train import cnn_recipe

    from edgekd.distill.runner import run_training
    from edgekd.recipe import recipe_from_dict

    r = recipe_from_dict(cnn_recipe(stages=[{"name": "q", "epochs": 1, "train": {"qat": True}},
                                            {"name": "f", "epochs": 1}]))  # fmt: skip
    with pytest.raises(EdgekdError, match=r"stages\[0\]\.train\.qat' is true but a later stage"):
        run_training(r, tmp_path, distill=False, progress=False)
    assert not (tmp_path / "r").exists()
    with pytest.raises(EdgekdError, match="qat_range_epochs"):
        recipe_from_dict(cnn_recipe(train={"epochs": 2, "qat": True, "qat_range_epochs": -1}))


def _qat_recipe() -> dict:
    from _train import cnn_recipe

    return cnn_recipe(
        data={"name": "digits", "val_fraction": 0.1},
        stages=[
            {"name": "float", "epochs": 3},
            {"name": "qat", "epochs": 2, "train": {"qat": True, "lr": 0.002}},
        ],
        train={"epochs": 5, "batch_size": 32, "lr": 0.01, "optimizer": "adam"},
    )


def test_qat_stage_resumes_exactly(tmp_path) -> None:
    from _train import interrupt_and_resume

    from edgekd.distill.runner import run_training
    from edgekd.recipe import recipe_from_dict

    r = recipe_from_dict(_qat_recipe())
    whole = run_training(r, tmp_path / "a", distill=False, progress=False)
    resumed = interrupt_and_resume(
        r, tmp_path / "b", distill=False, stop_after_epoch=4
    )  # inside the QAT stage
    a, b = (torch.load(run.model, weights_only=True) for run in (whole, resumed))
    assert a["meta"]["qat"] == b["meta"]["qat"] and len(a["meta"]["qat"]["points"]) >= 3
    assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])


@pytest.mark.slow
def test_exported_int8_computes_what_qat_trained(tmp_path) -> None:
    """The learned ranges land on every re-rangeable int8 tensor, and TFLite Micro's int8 activations
    equal the PyTorch simulation's to one quantization step."""
    from edgekd.distill.runner import run_training
    from edgekd.export import export_run
    from edgekd.export import ranges as R
    from edgekd.export.source import load_source
    from edgekd.graph import read_tflite
    from edgekd.graph.quant import dequantize, quantize
    from edgekd.recipe import recipe_from_dict
    from edgekd.runtimes import adapt_input, run_outputs

    run = run_training(recipe_from_dict(_qat_recipe()), tmp_path / "runs", distill=False, progress=False)
    out = export_run(run.root, target="tflite-micro", ranges="learned")
    rec = json.loads((out / "export.json").read_text())["calibration"]["ranges"]
    assert rec["chosen"] == "learned" and rec["learned"]["tensors_matched"] == rec["rerangeable_tensors"] > 0
    src = load_source(run.root)
    model, test = src.torch_model, src.splits.test
    learned = qat.read_qat_record(src.record["meta"]["qat"], "student")
    q = qat.FakeQuantizer(model, torch.from_numpy(test.x[:2]))
    q.set_ranges(learned)
    q.attach(model.eval())
    acts: dict[str, np.ndarray] = {}
    hooks = [model.get_submodule(p).register_forward_hook(
        lambda _m, _a, o, p=p: acts.__setitem__(p, o.detach().numpy().ravel())) for p in learned if p]  # fmt: skip
    with torch.no_grad():
        sim = model(torch.from_numpy(test.x)).numpy()
        model(torch.from_numpy(test.x[:1]))
    for h in hooks:
        h.remove()
    q.detach()
    int8 = (out / "model_int8.tflite").read_bytes()
    fp32, m8 = read_tflite((out / "model_fp32.tflite").read_bytes()), read_tflite(int8)
    shape = tuple(m8.input_details()[0]["shape"])
    channels_last = tuple(shape[1:]) != tuple(test.x.shape[1:])
    x8 = adapt_input(test.x, shape, channels_last, "test")
    matched, _ = R.match_learned(fp32, m8, learned, model, test.x[:16], x8[:16], "student")
    by_range = {v: k for k, v in learned.items()}
    vals, _ = next(rq.iter_tensors(m8, x8[:1], sorted(matched)))
    off = []
    for t, v in zip(sorted(matched), vals):
        step = float(m8.tensors[t].scale[0])
        diff = np.abs(np.sort(v.ravel()) - np.sort(acts[by_range[matched[t]]]))
        assert diff.max() <= 1.01 * step  # at most one step: rounding order (bias, folded batch norm)
        off.append(diff > 0.01 * step)
    assert np.concatenate(off).mean() < 0.05  # and rarely
    tflm = run_outputs("tflm", out / "model_int8.tflite", test.x, channels_last=channels_last)
    o = m8.output_details()[0]  # the int8 logits, on the simulation too (their range is the calibration's)
    sim = dequantize(quantize(sim, o["scale"], o["zero_point"], np.int8), o["scale"], o["zero_point"])
    assert np.abs(tflm - sim).max() <= 2.01 * o["scale"]
    assert (tflm.argmax(1) == sim.argmax(1)).mean() >= 0.99  # the rest: ties between int8 logits


def test_a_route_that_cannot_keep_learned_ranges_says_so(monkeypatch, tmp_path) -> None:
    from types import SimpleNamespace

    from edgekd.export import ranges as R
    from edgekd.graph.sample_models import sample_models

    data = sample_models(["tiny_cnn"])["tiny_cnn"]
    meta = {"qat": {"format": qat.QAT_FORMAT, "points": [{"module": "features.0", "range": [0.0, 1.0]}]}}
    src = SimpleNamespace(record={"meta": meta}, run=None, path=tmp_path / "student.pt")
    ctx = SimpleNamespace(src=src, record={"route": {"used": "litert-torch"}})
    monkeypatch.setattr(R, "same_graph", lambda a, b: False)
    with pytest.raises(
        EdgekdError, match=r"student\.pt: the litert-torch route.*--route onnx2tf.*--ranges minmax"
    ):
        R.choose(ctx, {"fp32": data, "int8": data}, "auto")
    R.choose(ctx, {"fp32": data, "int8": data}, "minmax")  # dropping them is allowed, and recorded
    assert ctx.record["calibration"]["ranges"]["chosen"] == "minmax"
    plain = SimpleNamespace(src=SimpleNamespace(record={"meta": {}}, run=None, path=src.path), record={})
    with pytest.raises(EdgekdError, match="--ranges learned needs a student trained with train.qat"):
        R.choose(plain, {"fp32": data, "int8": data}, "learned")


def test_model_init_starts_from_a_trained_student(tmp_path) -> None:
    from _train import cnn_recipe

    from edgekd.data.prepare import prepare_data
    from edgekd.distill.runner import load_initial_weights, model_kwargs, run_training
    from edgekd.models import load_model
    from edgekd.recipe import recipe_from_dict

    src = run_training(
        recipe_from_dict(cnn_recipe(train={"epochs": 1})), tmp_path, distill=False, progress=False
    )
    r = recipe_from_dict(cnn_recipe(model={**cnn_recipe()["model"], "init": str(src.root)}))
    kwargs = model_kwargs(r.model.kwargs, prepare_data(r))
    student = build_model(r.model.name, **kwargs)
    assert load_initial_weights(student, r, kwargs, tmp_path) == src.model
    trained, _ = load_model(src.model)
    assert all(
        torch.equal(a, b) for a, b in zip(student.state_dict().values(), trained.state_dict().values())
    )
    other = recipe_from_dict(
        cnn_recipe(model={"name": "cnn", "kwargs": {"channels": [4, 4]}, "init": str(src.root)})
    )
    with pytest.raises(EdgekdError, match=r"key 'model.init' names .*model\.pt, a 'cnn' network"):
        load_initial_weights(build_model("cnn", **model_kwargs(other.model.kwargs, prepare_data(other))),
                             other, model_kwargs(other.model.kwargs, prepare_data(other)), tmp_path)  # fmt: skip
