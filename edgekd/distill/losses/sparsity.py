"""Sparsity patterns: match which ReLUs are on (the teacher's ``1[v_t > 0]``) with a differentiable
surrogate of the student's indicator, ``sigmoid(u_s / tau)``.

Tap *pre-ReLU* responses; the student's goes through the adapter when widths differ. The loss is the
binary cross-entropy ``mean [ -rho_t log sigmoid(u_s/tau) - (1 - rho_t) log(1 - sigmoid(u_s/tau)) ]``
over every element, ``rho_t = 1[v_t > 0]``. (A smooth relative of activation boundaries, Heo et al.
2019, in the "match the sparsity pattern" family of the course material.)
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from edgekd.distill.losses.base import Step, register_loss
from edgekd.distill.losses.checks import positive


def _check(s_shapes, t_shapes, params, where) -> None:
    positive(params, "tau", where, 1.0)


@register_loss("sparsity", features=True, check=_check, paper="ReLU on/off patterns (cf. Heo et al. 2019)")
def sparsity_pattern(step: Step, tau: float = 1.0) -> Tensor:
    """ReLU on/off match ``mean BCE(sigmoid(u_s / tau), v_t > 0)`` (the teacher's on/off indicator)."""
    on = (step.ft > 0).to(step.fs.dtype)
    return F.binary_cross_entropy_with_logits(step.fs / tau, on)
