"""Registry of distillation losses (torchdistill style): ``@register_loss("name")`` adds one.

Every loss is a callable ``loss(student_out, teacher_out, **kw) -> scalar tensor``; its docstring gives
the formula and the paper.
"""

from __future__ import annotations

from collections.abc import Callable

import torch.nn.functional as F
from torch import Tensor

from edgekd.registry import Registry

LOSSES: Registry[Callable[..., Tensor]] = Registry("loss")
register_loss = LOSSES.register


@register_loss("ce")
def cross_entropy(logits: Tensor, targets: Tensor, label_smoothing: float = 0.0) -> Tensor:
    """Cross-entropy with hard labels: ``CE(y, softmax(z))`` averaged over the batch."""
    return F.cross_entropy(logits, targets, label_smoothing=label_smoothing)


@register_loss("kd")
def kd_loss(student_logits: Tensor, teacher_logits: Tensor, temperature: float = 4.0) -> Tensor:
    """Hinton soft-target loss (Hinton, Vinyals & Dean, 2015, "Distilling the Knowledge in a Neural Network").

    ``T^2 * KL(softmax(z_t / T) || softmax(z_s / T))``, summed over classes, averaged over the batch.
    The ``T^2`` keeps gradient magnitudes comparable across temperatures.
    """
    t = float(temperature)
    log_p_s = F.log_softmax(student_logits / t, dim=1)
    log_p_t = F.log_softmax(teacher_logits / t, dim=1)
    kl = (log_p_t.exp() * (log_p_t - log_p_s)).sum(dim=1).mean()
    return kl * (t * t)


@register_loss("soft-ce")
def soft_cross_entropy(student_logits: Tensor, teacher_logits: Tensor, temperature: float = 1.0) -> Tensor:
    """Cross-entropy to the teacher's softened distribution: ``-T^2 * sum p_t log p_s`` (KD up to a constant)."""
    t = float(temperature)
    p_t = F.softmax(teacher_logits / t, dim=1)
    return -(p_t * F.log_softmax(student_logits / t, dim=1)).sum(dim=1).mean() * (t * t)


__all__ = [
    "LOSSES",
    "register_loss",
    "cross_entropy",
    "kd_loss",
    "soft_cross_entropy",
]
