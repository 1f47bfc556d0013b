"""edgekd.distill.train.stage: each stage starts from the last one's weights; resume across them."""

from __future__ import annotations

import json

import pytest
import torch
from _train import cnn_recipe, interrupt_and_resume

from edgekd.distill.runner import run_training
from edgekd.distill.train import TrainingInterrupted
from edgekd.models import build_model, load_model
from edgekd.recipe import recipe_from_dict


def _stages() -> list[dict]:
    return [
        {"name": "hint", "epochs": 1, "trainable": "features", "train": {"lr": 0.02},
         "losses": [{"name": "hint", "student": "features.1", "teacher": "features.1"}]},
        {"name": "kd", "epochs": 2, "losses": [{"name": "kd", "weight": 0.9}, {"name": "ce", "weight": 0.1}]},
    ]  # fmt: skip


def test_two_stages_second_starts_from_the_first(cnn_teacher, tmp_path):
    r = recipe_from_dict(cnn_recipe(teacher={"path": str(cnn_teacher)}, stages=_stages()))
    with pytest.raises(TrainingInterrupted):
        run_training(r, tmp_path, distill=True, progress=False, stop_after_epoch=1)
    ck = torch.load(tmp_path / "r" / "checkpoint.pt", weights_only=True)
    after_stage1 = {
        k[len("student.") :]: v for k, v in ck["distillers"][0].items() if k.startswith("student.")
    }
    seed_model = build_model("cnn", input_shape=[1, 8, 8], num_classes=10, channels=[4, 8], depthwise=False)
    torch.manual_seed(0)
    fresh = build_model(
        "cnn", input_shape=[1, 8, 8], num_classes=10, channels=[4, 8], depthwise=False
    ).state_dict()
    del seed_model
    # stage 1 trains only `features`: the classifier is still at its initialisation, the features moved
    assert torch.equal(after_stage1["classifier.weight"], fresh["classifier.weight"])
    assert not torch.equal(after_stage1["features.0.0.weight"], fresh["features.0.0.weight"])
    # stage 2 starts from exactly those weights (checkpoint of stage 1 = the distiller of stage 2)
    assert torch.equal(
        ck["distillers"][1]["student.features.0.0.weight"], after_stage1["features.0.0.weight"]
    )
    run = run_training(r, tmp_path, distill=True, progress=False, resume=True)
    hist = json.loads(run.metrics.read_text())["history"]
    assert [h["stage"] for h in hist] == [1, 2, 2] and "train_hint" in hist[0] and "train_kd" in hist[1]
    final, _ = load_model(run.student)
    assert not torch.equal(final.state_dict()["classifier.weight"], fresh["classifier.weight"])


@pytest.mark.slow
def test_resume_is_bit_identical_across_a_stage_boundary(cnn_teacher, tmp_path):
    r = recipe_from_dict(
        cnn_recipe(teacher={"path": str(cnn_teacher)}, stages=_stages(), data={"name": "digits", "jitter": 1})
    )
    full = run_training(r, tmp_path / "a", distill=True, progress=False)
    for stop in (1, 2):  # at the boundary, and inside the second stage
        d = tmp_path / f"b{stop}"
        resumed = interrupt_and_resume(r, d, distill=True, stop_after_epoch=stop)
        a, _ = load_model(full.student)
        b, _ = load_model(resumed.student)
        assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values())), stop
        ha = [h["train_loss"] for h in json.loads(full.metrics.read_text())["history"]]
        hb = [h["train_loss"] for h in json.loads(resumed.metrics.read_text())["history"]]
        assert ha == hb
