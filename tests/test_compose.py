"""edgekd.distill.compose: the weighted sum of recipe losses; adapters trained, resumed, not exported."""

from __future__ import annotations

import json
import math

import pytest
import torch
from _train import cnn_recipe, interrupt_and_resume

from edgekd.distill.compose import LossComposer
from edgekd.distill.losses import Step
from edgekd.distill.runner import run_training
from edgekd.models import load_model
from edgekd.recipe import LossConfig, recipe_from_dict


def test_composed_loss_equals_the_hand_computed_weighted_sum():
    torch.manual_seed(0)
    zs, zt = torch.randn(4, 3), torch.randn(4, 3)
    y = torch.tensor([0, 2, 1, 1])
    specs = [
        LossConfig("ce", 0.3),
        LossConfig("kd", 0.7, {"temperature": 2.0}),
        LossConfig("output-mse", 0.5),
    ]
    net = torch.nn.Linear(2, 3)
    terms = LossComposer(specs, net, net)(Step(x=torch.zeros(4, 2), y=y, student=zs, teacher=zt))

    def log_softmax(row, t=1.0):
        m = max(v / t for v in row)
        lse = m + math.log(sum(math.exp(v / t - m) for v in row))
        return [v / t - lse for v in row]

    ce = -sum(log_softmax(zs[i].tolist())[y[i]] for i in range(4)) / 4
    kd = 0.0
    for i in range(4):
        ls, lt = log_softmax(zs[i].tolist(), 2.0), log_softmax(zt[i].tolist(), 2.0)
        kd += sum(math.exp(b) * (b - a) for a, b in zip(ls, lt))
    kd = 4.0 * kd / 4
    mse = float(((zs - zt) ** 2).mean())
    assert set(terms) == {"ce", "kd", "output-mse"}
    assert terms["ce"].item() == pytest.approx(0.3 * ce, rel=1e-5)
    assert terms["kd"].item() == pytest.approx(0.7 * kd, rel=1e-5)
    assert terms["output-mse"].item() == pytest.approx(0.5 * mse, rel=1e-5)


@pytest.mark.slow
def test_hint_with_adapter_is_trained_checkpointed_resumed_and_not_exported(cnn_teacher, tmp_path):
    losses = [{"name": "kd", "weight": 0.5}, {"name": "ce", "weight": 0.5},
              {"name": "hint", "weight": 1.0, "student": "features.1", "teacher": "features.1"}]  # fmt: skip
    r = recipe_from_dict(
        cnn_recipe(
            teacher={"path": str(cnn_teacher)},
            losses=losses,
            train={"epochs": 3, "batch_size": 32, "lr": 0.01, "optimizer": "adam"},
        )
    )
    full = run_training(r, tmp_path / "a", distill=True, progress=False)
    ck = torch.load(full.checkpoint, weights_only=True)
    adapter_keys = [k for k in ck["distillers"][0] if k.startswith("composer.adapters.2")]
    assert adapter_keys, "the 8->16 channel adapter must be in the checkpoint"
    hist = json.loads(full.metrics.read_text())["history"]
    assert "train_hint" in hist[0] and hist[-1]["train_hint"] < hist[0]["train_hint"]
    student, _ = load_model(full.student)
    assert not any("adapter" in k for k in student.state_dict())  # never exported with the student
    # resume: stop after epoch 1, continue, and get the identical result (adapter state restored)
    resumed = interrupt_and_resume(r, tmp_path / "b", distill=True)
    a, _ = load_model(full.student)
    b, _ = load_model(resumed.student)
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(va, vb), k
    ca = torch.load(full.checkpoint, weights_only=True)["distillers"][0]
    cb = torch.load(resumed.checkpoint, weights_only=True)["distillers"][0]
    assert all(torch.equal(ca[k], cb[k]) for k in adapter_keys)
