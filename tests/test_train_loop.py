"""The training loop end to end: distillation on digits, teacher/data class checks, bias correction."""

import json

import pytest
from _train import digits_recipe as _recipe

from edgekd.data.prepare import prepare_data
from edgekd.distill.runner import run_training
from edgekd.errors import EdgekdError
from edgekd.models import load_model


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
