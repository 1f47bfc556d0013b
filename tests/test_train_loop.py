"""edgekd.distill.train.loop end to end: class checks, bias correction, method optimisers, tasks."""

import json

import numpy as np
import pytest
import torch
from _train import digits_recipe as _recipe

from edgekd.data.prepare import prepare_data
from edgekd.distill.methods.base import Distiller
from edgekd.distill.runner import run_training
from edgekd.distill.train import Stage, Trainer
from edgekd.errors import EdgekdError
from edgekd.models import load_model
from edgekd.recipe import recipe_from_dict
from edgekd.runfolder import RunFolder


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


class _TwoNets(Distiller):
    """A fake scheme: two independent networks, each with its own optimizer, in one loop."""

    needs_teacher = False

    def __init__(self) -> None:
        super().__init__(torch.nn.Linear(4, 3))
        self.other = torch.nn.Linear(4, 3)
        self.calls = 0

    def param_groups(self):
        return {"a": list(self.student.parameters()), "b": list(self.other.parameters())}

    def forward_train(self, x, y):
        self.calls += 1
        za, zb = self.student(x.flatten(1)), self.other(x.flatten(1))
        return za, {
            "a": torch.nn.functional.cross_entropy(za, y),
            "b": torch.nn.functional.cross_entropy(zb, y),
        }


def test_the_loop_asks_the_scheme_for_its_networks_and_optimizers(tmp_path):
    from edgekd.data import ArrayDataset

    rng = np.random.default_rng(0)
    data = ArrayDataset(rng.standard_normal((40, 1, 2, 2)).astype(np.float32), rng.integers(0, 3, 40))
    fake = _TwoNets()
    before = [p.detach().clone() for p in fake.parameters()]
    cfg = recipe_from_dict({"train": {"epochs": 2, "batch_size": 10, "lr": 0.1}}).train
    run = RunFolder(tmp_path).ensure()
    Trainer([Stage("s", fake, cfg)], None, run, progress=False).fit(data)
    assert fake.calls == 8
    assert all(not torch.equal(a, b) for a, b in zip(before, fake.parameters()))
    ck = torch.load(run.checkpoint, weights_only=True)
    assert set(ck["optimizers"]) == {"a", "b"} and set(ck["schedulers"]) == {"a", "b"}


def _ae_npz(path, privileged: bool = False) -> None:
    rng = np.random.default_rng(0)
    basis = rng.standard_normal((3, 16))
    x = (rng.standard_normal((300, 3)) @ basis).astype(np.float32)
    xt = (rng.standard_normal((100, 3)) @ basis).astype(np.float32)
    yt = np.zeros(100, np.int64)
    xt[:20] += rng.standard_normal((20, 16)).astype(np.float32) * 3  # anomalies off the subspace
    yt[:20] = 1
    arrays = {"x": x, "x_test": xt, "y_test": yt, "task": np.array("reconstruction")}
    np.savez(path, **arrays)


class TinyAE(torch.nn.Module):
    def __init__(self, input_shape=(16,), num_classes=0, hidden=3):
        super().__init__()
        d = int(np.prod(input_shape))
        self.net = torch.nn.Sequential(torch.nn.Linear(d, 8), torch.nn.ReLU(), torch.nn.Linear(8, hidden),
                                       torch.nn.ReLU(), torch.nn.Linear(hidden, 8), torch.nn.ReLU(), torch.nn.Linear(8, d))  # fmt: skip

    def forward(self, x):
        return self.net(x)


def test_a_reconstruction_run_scores_anomalies(tmp_path):
    _ae_npz(tmp_path / "ae.npz")
    r = _recipe(data={"name": "npz", "options": {"path": str(tmp_path / "ae.npz")}},
                model={"name": "test_train_loop:TinyAE", "kwargs": {"hidden": 3}},
                train={"epochs": 15, "batch_size": 32, "lr": 0.01, "optimizer": "adam"})  # fmt: skip
    run = run_training(r, tmp_path, distill=False, progress=False)
    info = json.loads(run.data_info.read_text())
    assert info["task"] == "reconstruction"
    m = json.loads(run.metrics.read_text())
    assert "train_recon-mse" in m["history"][0] and "val_recon_error" in m["history"][0]
    assert m["history"][-1]["train_loss"] < m["history"][0]["train_loss"]
    assert m["final"]["test_auc"] > 0.9  # anomalies reconstruct worse
