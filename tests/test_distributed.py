"""edgekd.distill.distributed: training under torchrun matches one process.

Multi-process training (issue 13): 2 CPU processes under torchrun (gloo, DDP) give the single-process
result for the same global batch, resume works, and a batch the world size does not divide is refused.

What is compared: the final student's weights (every tensor, max abs difference <= 1e-5), the per-epoch
train loss in metrics.json (relative 1e-5) and the validation/test accuracy (equal). The only difference
allowed is float summation order: DDP averages two half-batch gradients where one process sums the batch.
The student is an MLP without BatchNorm or dropout (BN statistics are per rank under DDP).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from edgekd.distill.distributed import DistContext, check_batch, local_rows
from edgekd.distill.runner import run_training
from edgekd.errors import EdgekdError
from edgekd.models import load_model
from edgekd.recipe import recipe_from_dict

REPO = Path(__file__).resolve().parents[1]
TRAIN = {"batch_size": 64, "lr": 0.05, "optimizer": "sgd", "momentum": 0.9, "schedule": "constant"}


def _recipe(teacher: Path, epochs: int) -> dict:
    return {
        "name": "ddp",
        "seed": 3,
        "data": {"name": "digits"},
        "model": {"name": "mlp", "kwargs": {"hidden": [24]}},
        "teacher": {"path": str(teacher)},
        "method": {"name": "kd", "params": {"temperature": 4.0, "alpha": 0.7}},
        "train": {**TRAIN, "epochs": epochs, "threads": 1},
    }


@pytest.fixture(scope="module")
def teacher(tmp_path_factory) -> Path:
    runs = tmp_path_factory.mktemp("runs")
    r = recipe_from_dict(
        {
            "name": "t",
            "data": {"name": "digits"},
            "model": {"name": "mlp", "kwargs": {"hidden": [48]}},
            "train": {**TRAIN, "epochs": 2},
        }  # fmt: skip
    )
    return run_training(r, runs, distill=False, progress=False).root


def _edgekd(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "edgekd", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)  # fmt: skip


@pytest.mark.slow
def test_two_processes_equal_one_process_and_resume(tmp_path, teacher):
    one = run_training(recipe_from_dict(_recipe(teacher, 2)), tmp_path / "one", distill=True, progress=False)
    rec1 = tmp_path / "e1.yaml"
    rec1.write_text(yaml.safe_dump(_recipe(teacher, 1)))
    # 2 processes: one epoch, then --resume to two (a constant LR, so the schedule does not depend on it)
    p = _edgekd(["distill", str(rec1), "--nproc", "2", "--runs-dir", "two", "-q"], tmp_path)
    assert p.returncode == 0, p.stderr[-2000:]
    assert p.stdout.count("run folder:") == 1  # rank 0 reports, rank 1 stays quiet
    p = _edgekd(["distill", str(rec1), "--nproc", "2", "--runs-dir", "two", "-q", "--resume",
                 "--set", "train.epochs=2"], tmp_path)  # fmt: skip
    assert p.returncode == 0, p.stderr[-2000:]
    two = tmp_path / "two" / "ddp"
    speed = json.loads((two / "speed.json").read_text())
    assert speed["world_size"] == 2 and "gloo" in speed["backend"]
    a, _ = load_model(one.student)
    b, _ = load_model(two / "student.pt")
    for (name, wa), wb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.allclose(wa, wb, atol=1e-5, rtol=0), (name, float((wa - wb).abs().max()))
    h1 = json.loads(one.metrics.read_text())
    h2 = json.loads((two / "metrics.json").read_text())
    assert len(h2["history"]) == 2
    for r1, r2 in zip(h1["history"], h2["history"]):
        assert r2["train_loss"] == pytest.approx(r1["train_loss"], rel=1e-5)
        assert r2["val_accuracy"] == r1["val_accuracy"] and r2["train_accuracy"] == r1["train_accuracy"]
    assert h2["final"]["test_accuracy"] == h1["final"]["test_accuracy"] > 0.5


@pytest.mark.slow
def test_a_batch_the_world_size_does_not_divide_is_refused_before_writing(tmp_path, teacher):
    rec = tmp_path / "r.yaml"
    rec.write_text(yaml.safe_dump(_recipe(teacher, 1)))
    p = _edgekd(["distill", str(rec), "--nproc", "2", "--runs-dir", "runs", "-q", "--set", "train.batch_size=63"],
                tmp_path)  # fmt: skip
    assert p.returncode != 0
    assert "train.batch_size=63 is not a multiple of the world size 2" in p.stderr
    assert not (tmp_path / "runs" / "ddp").exists()


def test_the_local_batches_are_the_distributed_sampler_split():
    with pytest.raises(EdgekdError, match="not a multiple of the world size 4"):
        check_batch(30, 4)
    check_batch(32, 4)
    idx = torch.arange(10, 20)
    parts = [idx[local_rows(10, DistContext(r, 3))] for r in range(3)]
    assert sorted(torch.cat(parts).tolist()) == idx.tolist()  # together: the global batch, once each
    assert parts[1].tolist() == [11, 14, 17]  # rank r takes r, r+N, ... as DistributedSampler does
