"""edgekd.timeseries.scoring: per-step scoring of SMD runs, privileged all-metrics, sensor-mse.

On small synthetic machine trees with hand-computed values; a run that is not an SMD run is refused.
"""

import json

import numpy as np
import pytest
import torch

from edgekd.data import DATASETS
from edgekd.data.registry import load_data
from edgekd.data.smd import load_smd
from edgekd.distill.losses import LOSSES, Step
from edgekd.errors import EdgekdError
from edgekd.metrics.anomaly import best_f1, roc_auc
from edgekd.timeseries.scoring import position_errors, score_run, score_smd, smd_data_of_run


def _tree(root, name="machine-9-9", steps=(60, 40), width=3, seed=0):
    rng = np.random.default_rng(seed)
    train, test = rng.random((steps[0], width)), rng.random((steps[1], width))
    labels = ["1" if 10 <= i < 15 else "0" for i in range(steps[1])]
    for sub, lines in (("train", [",".join(f"{v:.3f}" for v in r) for r in train]),
                       ("test", [",".join(f"{v:.3f}" for v in r) for r in test]), ("test_label", labels)):  # fmt: skip
        (root / sub).mkdir(parents=True, exist_ok=True)
        (root / sub / f"{name}.txt").write_text("\n".join(lines) + "\n")


def test_privileged_all_metrics_are_aligned_with_the_sensor_windows(tmp_path):
    _tree(tmp_path, width=5)
    raw = DATASETS.get("smd")(machines="machine-9-9", root=str(tmp_path), length=6, stride=3, test_stride=6,
                              val_fraction=0.5, features=[4, 1], privileged=True)  # fmt: skip
    full = raw.extra_train["all_metrics"]
    assert raw.x_train.shape == (9, 6, 2) and full.shape == (9, 6, 5)
    np.testing.assert_array_equal(raw.x_train, full[..., [4, 1]])  # same per-column statistics
    assert raw.extra_test["all_metrics"].shape == (7, 6, 5)
    np.testing.assert_array_equal(raw.x_test, raw.extra_test["all_metrics"][..., [4, 1]])
    with pytest.raises(EdgekdError, match="privileged=true needs data.options.features"):
        DATASETS.get("smd")(machines="machine-9-9", root=str(tmp_path), length=6, privileged=True)


def test_privileged_input_reaches_load_data(tmp_path):
    _tree(tmp_path, width=4)
    opts = {"machines": ["machine-9-9"], "root": str(tmp_path), "length": 5, "stride": 5, "val_fraction": 0.5,
            "features": [0, 2], "privileged": True}  # fmt: skip
    s = load_data("smd", options=opts)
    assert s.describe()["extra_inputs"] == ["all_metrics"] and s.input_shape == (5, 2)
    assert s.train.extra["all_metrics"].shape == (6, 5, 4) and s.test.extra["all_metrics"].shape[0] == len(
        s.test
    )


def test_sensor_mse_against_hand_computed_value():
    info = LOSSES.get("sensor-mse")
    student = torch.tensor([[[1.0, 2.0]], [[0.0, -1.0]]])  # (2, 1, 2)
    teacher = torch.tensor([[[9.0, 1.5, 0.0, 3.0]], [[9.0, 0.0, 0.0, 1.0]]])  # (2, 1, 4): columns 3 and 1
    step = Step(x=student, y=None, student=student, teacher=teacher)
    # differences: (1-3, 2-1.5, 0-1, -1-0) -> squares 4, 0.25, 1, 1 -> mean 1.5625
    assert info.fn(step, features=[3, 1]).item() == pytest.approx(1.5625)
    with pytest.raises(EdgekdError, match="params.features must equal data.options.features"):
        info.fn(step, features=[3, 1, 0])
    with pytest.raises(EdgekdError, match="params.features must list"):
        info.check([], [], {}, "losses[1]")


def test_score_smd_matches_hand_per_step_scores(tmp_path):
    """A predictor returning zeros: the per-position error is the mean square of the window, each test
    step's score is the mean over the windows covering it = mean over features of x^2 at that step."""
    _tree(tmp_path, width=3, steps=(60, 40))
    d = load_smd("machine-9-9", root=tmp_path, length=8, stride=4, test_stride=3, val_fraction=0.5)
    m = d.machines[0]
    zero = np.zeros_like
    x, _, _ = d.windows("test")
    np.testing.assert_allclose(position_errors(zero, x), (x.astype(np.float64) ** 2).mean(2))
    rep = score_smd(zero, d)
    step = (m.test.astype(np.float64) ** 2).mean(1)
    want = best_f1(step, m.labels)
    got = rep["machines"]["machine-9-9"]
    assert got["f1_best"] == pytest.approx(want["f1"]) and got["auc"] == pytest.approx(
        roc_auc(step, m.labels)
    )
    thr = np.quantile((m.val.astype(np.float64) ** 2).mean(1), 0.99)
    assert got["threshold_val"] == pytest.approx(thr)
    assert rep["mean"]["f1_best"] == pytest.approx(want["f1"])


def test_score_smd_means_over_machines(tmp_path):
    _tree(tmp_path, "machine-9-1", seed=1)
    _tree(tmp_path, "machine-9-2", seed=2)
    d = load_smd(
        ["machine-9-1", "machine-9-2"], root=tmp_path, length=8, stride=4, test_stride=8, val_fraction=0.5
    )
    rep = score_smd(np.zeros_like, d)
    a, b = rep["machines"]["machine-9-1"], rep["machines"]["machine-9-2"]
    assert a["auc"] != b["auc"] and rep["mean"]["auc"] == pytest.approx((a["auc"] + b["auc"]) / 2)


def test_smd_data_of_run_rebuilds_the_options(tmp_path):
    _tree(tmp_path / "data")
    opts = {
        "machines": ["machine-9-9"],
        "root": str(tmp_path / "data"),
        "length": 7,
        "stride": 2,
        "val_fraction": 0.5,
    }
    (tmp_path / "data.json").write_text(json.dumps({"load_args": {"name": "smd", "options": opts}}))
    d = smd_data_of_run(tmp_path, test_stride=5)
    assert (d.length, d.stride, d.test_stride) == (7, 2, 5)


def test_unroll_run_keeps_the_weights_and_outputs(tmp_path):
    from edgekd.models import build_model
    from edgekd.models.checkpoint import load_model, save_model
    from edgekd.timeseries.unroll import unroll_run

    torch.manual_seed(0)
    kw = {"input_shape": [6, 3], "hidden": 5, "latent": 2}
    fused = build_model("lstm-ae", **kw).eval()
    (tmp_path / "run").mkdir()
    save_model(tmp_path / "run" / "student.pt", fused, "lstm-ae", kw)
    (tmp_path / "run" / "data.json").write_text('{"task": "reconstruction"}')
    out = unroll_run(tmp_path / "run", tmp_path / "unrolled")
    model, rec = load_model(out)
    x = torch.randn(4, 6, 3)
    assert rec["kwargs"]["unrolled"] is True and (tmp_path / "unrolled" / "data.json").exists()
    torch.testing.assert_close(model(x), fused(x), atol=1e-6, rtol=1e-5)
    with pytest.raises(EdgekdError, match="new, empty folder"):
        unroll_run(tmp_path / "run", tmp_path / "unrolled")


def test_score_run_refuses_a_non_smd_run(tmp_path):
    (tmp_path / "data.json").write_text(json.dumps({"load_args": {"name": "digits", "options": {}}}))
    with pytest.raises(EdgekdError, match="per-step scoring is for smd runs"):
        score_run(tmp_path)
    with pytest.raises(EdgekdError, match="load_args"):
        score_run(tmp_path / "nothing")
