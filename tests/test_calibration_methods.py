"""int8 activation ranges (issue 27): min/max, percentile and MSE-optimal clipping written into the int8
model, chosen on the validation split (never the test split) and recorded in export.json."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest

from edgekd.errors import EdgekdError
from edgekd.export import ranges as R
from edgekd.graph import read_tflite
from edgekd.graph import requantize as rq
from edgekd.graph.sample_models import sample_models


def test_percentile_and_mse_clip_long_tails() -> None:
    rng = np.random.default_rng(0)
    v = np.abs(rng.standard_t(3, 200_000)).astype(np.float32)  # ReLU-like, long tail
    lo, hi = R.percentile_range(v, 99.99)
    mlo, mhi = R.mse_range(v)
    assert lo >= 0 and mlo == 0 and hi < v.max() and mhi < v.max()
    assert R._qdq_mse(v, mlo, mhi) < R._qdq_mse(v, 0.0, float(v.max()))  # clipping pays on long tails


def test_qparams_follow_tflite() -> None:
    assert rq.qparams_for_range(0.0, 10.2) == pytest.approx((0.04, -128))
    scale, zp = rq.qparams_for_range(-1.0, 3.0)
    assert scale == pytest.approx(4 / 255) and zp == round(-128 + 1.0 / scale)  # zero exactly representable


def test_rerangeable_tensors_respect_op_constraints() -> None:
    m = read_tflite(
        sample_models(["tiny_cnn"])["tiny_cnn"]
    )  # conv, depthwise, max pool, conv, avg pool, dense, softmax
    groups = rq.rerangeable(m)
    by_op = {m.tensors[op.outputs[0]].index: op.opcode for op in m.operators}
    assert {by_op[t] for t in groups} <= rq.RESCALING_OPS
    dense = next(op for op in m.operators if op.opcode == "FULLY_CONNECTED")
    assert dense.outputs[0] not in groups  # read by SOFTMAX (fixed output range): kept
    dw = next(op for op in m.operators if op.opcode == "DEPTHWISE_CONV_2D")
    pool = next(op for op in m.operators if op.opcode == "MAX_POOL_2D")
    assert groups[dw.outputs[0]] == [pool.outputs[0]]  # the max pool follows its input's parameters
    with pytest.raises(EdgekdError, match="cannot be given new quantization"):
        rq.with_activation_ranges(m, {dense.outputs[0]: (0.0, 1.0)})


def test_rewriting_the_same_ranges_keeps_the_outputs() -> None:
    m = read_tflite(sample_models(["tiny_cnn"])["tiny_cnn"])
    same = {t: (float((-128 - m.tensors[t].zero_point[0]) * m.tensors[t].scale[0]),
                float((127 - m.tensors[t].zero_point[0]) * m.tensors[t].scale[0])) for t in rq.rerangeable(m)}  # fmt: skip
    x = np.random.default_rng(0).uniform(-1, 1, (16, 16, 16, 1)).astype(np.float32)
    a, b = rq.run_model(m.data, x), rq.run_model(rq.with_activation_ranges(m, same), x)
    assert (
        np.abs(a - b).max() <= m.tensors[m.outputs[0]].scale[0] + 1e-6
    )  # at most one output step (rounding)


class _Poison:
    def __getattr__(self, name: str) -> None:
        raise AssertionError(f"the test split was read ({name})")

    def __len__(self) -> int:
        raise AssertionError("the test split was read")


def test_held_out_split_is_validation_never_test() -> None:
    val = type(
        "S", (), {"x": np.zeros((3, 4), np.float32), "y": np.array([0, 1, 2]), "__len__": lambda self: 3}
    )()
    held = R.held_out_split(SimpleNamespace(train=None, val=val, test=_Poison()))
    assert held is not None and np.shares_memory(held[0], val.x) and len(held[0]) == 3
    empty = type("S", (), {"x": np.zeros((0, 4)), "y": np.zeros(0), "__len__": lambda self: 0})()
    assert R.held_out_split(SimpleNamespace(val=empty, test=_Poison())) is None


def test_unknown_ranges_method_is_one_line(tmp_path) -> None:
    from edgekd.export.quantize import load_recipe

    p = tmp_path / "c.yaml"
    p.write_text("ranges: histogram\n")
    with pytest.raises(EdgekdError, match=r"c.yaml: key 'ranges' is 'histogram'; valid: auto, minmax"):
        load_recipe(p)


@pytest.mark.slow
def test_export_chooses_ranges_on_validation(tmp_path, monkeypatch) -> None:
    from _train import cnn_recipe

    from edgekd.distill.runner import run_training
    from edgekd.export import export_run
    from edgekd.recipe import recipe_from_dict

    run = run_training(recipe_from_dict(cnn_recipe()), tmp_path / "runs", distill=False, progress=False)
    from edgekd.export.source import load_source

    splits = load_source(run.root, None).splits
    seen: list[np.ndarray] = []
    real = R._accuracy

    def spy(runtime, data, path, x, y, channels_last):  # noqa: ANN001
        seen.append(x)
        return real(runtime, data, path, x, y, channels_last)

    monkeypatch.setattr(R, "_accuracy", spy)
    out = export_run(run.root, target="tflite-micro")
    rec = json.loads((out / "export.json").read_text())["calibration"]["ranges"]
    assert rec["requested"] == "auto" and rec["held_out"]["split"] == "val"
    assert [c["method"] for c in rec["candidates"]] == ["minmax", "percentile", "mse"]
    assert rec["chosen"] in ("minmax", "percentile", "mse") and all(
        0 < c["held_out_accuracy"] <= 1 for c in rec["candidates"]
    )
    best = max(c["held_out_accuracy"] for c in rec["candidates"])
    assert next(c for c in rec["candidates"] if c["method"] == rec["chosen"])["held_out_accuracy"] == best
    assert len(seen) == 3 and all(len(x) == len(splits.val.x) for x in seen)
    val = np.moveaxis(splits.val.x, 1, -1)
    assert all(np.array_equal(x, splits.val.x) or np.array_equal(x, val) for x in seen)
    assert (out / "model_fp32.tflite").is_file()  # the float twin for profile --layers
