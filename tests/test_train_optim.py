"""edgekd.distill.train.optim: optimisers, LR schedules, max-norm and the stage's parameter groups."""

import math

import pytest
import torch
from torch import nn

from edgekd.distill.methods import build_method
from edgekd.distill.train import Stage, lr_factor, make_optimizer
from edgekd.distill.train.optim import StageOptimizers, apply_max_norm
from edgekd.errors import EdgekdError
from edgekd.recipe import TrainConfig


def test_warmup_then_cosine_schedule():
    f = lr_factor(TrainConfig(epochs=5, warmup_epochs=1, schedule="cosine"))
    assert f(0) == 0.5  # (0 + 1) / (1 + 1)
    assert f(1) == 1.0 and math.isclose(f(3), 0.5 * (1 + math.cos(math.pi * 2 / 4)))


def test_unknown_optimizer_is_refused():
    with pytest.raises(EdgekdError, match="train.optimizer='rmsprop'"):
        make_optimizer([nn.Parameter(torch.zeros(1))], TrainConfig(optimizer="rmsprop"))


def test_max_norm_caps_each_row_of_linear_weights():
    net = nn.Linear(4, 3)
    with torch.no_grad():
        net.weight.fill_(10.0)
    apply_max_norm(net, 1.0)
    assert torch.allclose(net.weight.norm(dim=1), torch.ones(3))


def test_a_trainable_prefix_that_selects_nothing_names_the_nearest_modules():
    net = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
    stage = Stage("s", build_method("supervised", net, None, {}), TrainConfig(), trainable="9")
    with pytest.raises(EdgekdError, match="trainable '9' selects no student parameter"):
        StageOptimizers(stage, "stages[0]")
    only_last = StageOptimizers(Stage("s", stage.distiller, TrainConfig(), trainable="2"), "stages[0]")
    assert {id(p) for p in only_last.params} == {id(p) for p in net[2].parameters()}
