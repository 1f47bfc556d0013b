"""edgekd.distill.train.checkpoint: an interrupted run resumes to the same result, or refuses.

Without --resume, a folder holding an interrupted run is refused.
"""

import json

import pytest
import torch
from _train import digits_recipe as _recipe

from edgekd.distill.runner import run_training
from edgekd.distill.train import TrainingInterrupted
from edgekd.errors import EdgekdError
from edgekd.models import load_model


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
