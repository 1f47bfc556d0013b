"""Losses between intermediate features tapped at named module paths."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from edgekd.distill.losses.base import Step, register_loss


@register_loss("hint", features=True, paper="Romero et al. 2015 (FitNets)")
def hint(step: Step) -> Tensor:
    """FitNet hint ``mean (r(u_s) - v_t)^2`` between a student layer (through the regressor r) and a teacher layer."""
    return F.mse_loss(step.fs, step.ft)
