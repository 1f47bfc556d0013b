"""Activation boundaries (Heo, Lee, Yun & Choi, AAAI 2019, "Knowledge Transfer via Distillation of
Activation Boundaries Formed by Hidden Neurons").

Tap *pre-ReLU* responses (e.g. the batch-norm before an activation). With ``rho_t = 1[v_t > 0]`` the
teacher's on/off pattern and ``r(u_s)`` the student's response through the connector (the adapter), the
hinge loss with margin ``m`` is
``mean [ rho_t * relu(m - r(u_s))^2 + (1 - rho_t) * relu(m + r(u_s))^2 ]`` (over every element).
It is meant as an initialisation stage before KD (``stages:``).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from edgekd.distill.losses.base import Step, register_loss
from edgekd.distill.losses.checks import positive


def _check(s_shapes, t_shapes, params, where) -> None:
    positive(params, "margin", where, 1.0)


def boundary_loss(u_s: Tensor, v_t: Tensor, margin: float = 1.0) -> Tensor:
    on = (v_t > 0).to(u_s.dtype)
    return (on * F.relu(margin - u_s).pow(2) + (1 - on) * F.relu(margin + u_s).pow(2)).mean()


@register_loss("ab", features=True, check=_check, paper="Heo et al. 2019 (activation boundaries)")
def activation_boundary(step: Step, margin: float = 1.0) -> Tensor:
    """Hinge on the teacher's ReLU pattern ``mean(rho relu(m - u_s)^2 + (1-rho) relu(m + u_s)^2)``."""
    return boundary_loss(step.fs, step.ft, margin)
