"""Training engine: distillation on digits, exact resume, NaN handling, bias correction."""

import json

import pytest
import torch

from edgekd.data.prepare import prepare_data
from edgekd.distill.engine import TrainingInterrupted
from edgekd.distill.runner import run_training
from edgekd.errors import EdgekdError
from edgekd.models import load_model
from edgekd.recipe import recipe_from_dict


def _recipe(**over):
    base = {
        "name": "r",
        "data": {"name": "digits"},
        "model": {"name": "mlp", "kwargs": {"hidden": [64], "dropout_hidden": 0.1}},
        "train": {"epochs": 4, "batch_size": 64, "lr": 0.05},
    }
    for k, v in over.items():
        base[k] = v
    return recipe_from_dict(base)


@pytest.fixture(scope="module")
def teacher_run(tmp_path_factory):
    runs = tmp_path_factory.mktemp("runs")
    r = _recipe(
        name="teacher",
        model={"name": "mlp", "kwargs": {"hidden": [128, 128]}},
        train={"epochs": 6, "batch_size": 64, "lr": 0.05},
    )
    return run_training(r, runs, distill=False, progress=False)


def test_teacher_and_distilled_student_beat_chance(teacher_run, tmp_path):
    tm = json.loads(teacher_run.metrics.read_text())
    assert tm["final"]["test_accuracy"] > 0.85
    r = _recipe(name="student", teacher={"path": str(teacher_run.root)}, method={"name": "kd", "params": {"temperature": 4.0, "alpha": 0.9}},
                model={"name": "mlp", "kwargs": {"hidden": [16]}})  # fmt: skip
    run = run_training(r, tmp_path, distill=True, progress=False)
    m = json.loads(run.metrics.read_text())
    assert m["final"]["test_accuracy"] > 0.7  # chance is 0.1
    assert set(m["history"][0]) >= {"train_kd", "train_ce", "val_accuracy", "seconds"}
    assert run.teacher.exists() and run.curves.stat().st_size > 1000
    model, rec = load_model(run.student)
    assert rec["name"] == "mlp" and rec["kwargs"]["hidden"] == [16]


def test_resume_gives_the_same_result_as_an_uninterrupted_run(tmp_path):
    r = _recipe(data={"name": "digits", "jitter": 1})
    full = run_training(r, tmp_path / "a", distill=False, progress=False)
    with pytest.raises(TrainingInterrupted):
        run_training(r, tmp_path / "b", distill=False, progress=False, stop_after_epoch=2)
    assert not (tmp_path / "b" / "r" / "model.pt").exists()
    resumed = run_training(r, tmp_path / "b", distill=False, progress=False, resume=True)
    a, _ = load_model(full.model)
    b, _ = load_model(resumed.model)
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(va, vb), k
    ha = json.loads(full.metrics.read_text())["history"]
    hb = json.loads(resumed.metrics.read_text())["history"]
    assert [h["train_loss"] for h in ha] == [h["train_loss"] for h in hb]


def test_interrupted_run_refuses_to_restart_without_resume(tmp_path):
    r = _recipe()
    with pytest.raises(TrainingInterrupted):
        run_training(r, tmp_path, distill=False, progress=False, stop_after_epoch=1)
    with pytest.raises(EdgekdError, match="--resume"):
        run_training(r, tmp_path, distill=False, progress=False)


def test_nan_loss_stops_with_message_and_keeps_last_good_checkpoint(tmp_path):
    r = _recipe(train={"epochs": 3, "batch_size": 64, "lr": 1e6, "momentum": 0.9})
    with pytest.raises(EdgekdError, match=r"(became (nan|inf)|exploded).*no good epoch yet"):
        run_training(r, tmp_path, distill=False, progress=False)
    assert not (tmp_path / "r" / "model.pt").exists()


def test_teacher_class_count_mismatch(teacher_run, tmp_path):
    import numpy as np

    x = np.random.default_rng(0).random((60, 1, 8, 8)).astype(np.float32)
    np.savez(tmp_path / "five.npz", x=x, y=np.arange(60) % 5)
    r = _recipe(data={"name": "npz", "options": {"path": str(tmp_path / "five.npz")}}, teacher={"path": str(teacher_run.root)},
                method={"name": "kd"})  # fmt: skip
    with pytest.raises(EdgekdError, match="teacher predicts 10 classes but data set 'npz' has 5"):
        run_training(r, tmp_path, distill=True, progress=False)


def test_omitted_class_bias_correction(teacher_run, tmp_path):
    r = _recipe(name="omit", data={"name": "digits", "exclude_classes": [3]}, teacher={"path": str(teacher_run.root)},
                method={"name": "kd", "params": {"temperature": 4.0, "alpha": 1.0}}, eval={"tune_bias_for_classes": [3]})  # fmt: skip
    splits = prepare_data(r)
    assert 3 not in splits.train.y
    run = run_training(r, tmp_path, distill=True, progress=False, splits=splits)
    m = json.loads(run.metrics.read_text())
    assert "3" in m["bias_correction"]
    excluded = m["test_errors_on_excluded"]
    # the student never saw a 3 and still recognises most of them from soft targets alone
    assert excluded["3"] < 0.5 * excluded["count"]
