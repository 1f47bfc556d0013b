"""Losses for autoencoders (the ``reconstruction`` task): the anomaly score is the reconstruction error."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from edgekd.distill.losses.base import Step, register_loss


def reconstruction_error(output: Tensor, x: Tensor) -> Tensor:
    """Per-sample anomaly score: ``mean over features of (f(x) - x)^2``, shape ``(N,)``."""
    return (output - x).pow(2).flatten(1).mean(dim=1)


@register_loss("recon-mse", needs_teacher=False, tasks=("reconstruction",))
def recon_mse(step: Step) -> Tensor:
    """Reconstruction error ``mean (f_s(x) - x)^2``."""
    return F.mse_loss(step.student, step.x)
