"""Losses for autoencoders (the ``reconstruction`` task): the anomaly score is the reconstruction error."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from edgekd.distill.losses.base import Step, register_loss


@register_loss("recon-mse", needs_teacher=False, tasks=("reconstruction",))
def recon_mse(step: Step) -> Tensor:
    """Reconstruction error ``mean (f_s(x) - x)^2``."""
    return F.mse_loss(step.student, step.x)
