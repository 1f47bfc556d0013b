"""Losses on the networks' outputs (logits): hard labels, Hinton soft targets, logit matching."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from edgekd.distill.losses.base import Step, register_loss
from edgekd.distill.losses.checks import positive


def cross_entropy(logits: Tensor, targets: Tensor, label_smoothing: float = 0.0) -> Tensor:
    """Cross-entropy with hard labels: ``CE(y, softmax(z))`` averaged over the batch."""
    return F.cross_entropy(logits, targets, label_smoothing=label_smoothing)


def kd_per_example(student_logits: Tensor, teacher_logits: Tensor, temperature: float = 4.0) -> Tensor:
    """``T^2 * KL(softmax(z_t / T) || softmax(z_s / T))`` per example, shape ``(N,)``."""
    t = float(temperature)
    log_p_s = F.log_softmax(student_logits / t, dim=1)
    log_p_t = F.log_softmax(teacher_logits / t, dim=1)
    return (log_p_t.exp() * (log_p_t - log_p_s)).sum(dim=1) * (t * t)


def kd_loss(student_logits: Tensor, teacher_logits: Tensor, temperature: float = 4.0) -> Tensor:
    """Hinton soft-target loss (Hinton, Vinyals & Dean, 2015, "Distilling the Knowledge in a Neural Network").

    ``T^2 * KL(softmax(z_t / T) || softmax(z_s / T))``, summed over classes, averaged over the batch.
    The ``T^2`` keeps gradient magnitudes comparable across temperatures.
    """
    return kd_per_example(student_logits, teacher_logits, temperature).mean()


def soft_cross_entropy(student_logits: Tensor, teacher_logits: Tensor, temperature: float = 1.0) -> Tensor:
    """Cross-entropy to the teacher's softened distribution: ``-T^2 * sum p_t log p_s`` (KD up to a constant)."""
    t = float(temperature)
    p_t = F.softmax(teacher_logits / t, dim=1)
    return -(p_t * F.log_softmax(student_logits / t, dim=1)).sum(dim=1).mean() * (t * t)


@register_loss("ce", needs_teacher=False, tasks=("classification",))
def ce(step: Step, label_smoothing: float = 0.0) -> Tensor:
    """Hard-label cross-entropy ``CE(y, softmax(z_s))``."""
    return cross_entropy(step.student, step.y, label_smoothing)


def _check_kd(s_shapes, t_shapes, params, where) -> None:
    positive(params, "temperature", where, 4.0)


def _check_soft_ce(s_shapes, t_shapes, params, where) -> None:
    positive(params, "temperature", where, 1.0)


@register_loss("kd", tasks=("classification",), check=_check_kd, paper="Hinton, Vinyals & Dean 2015")
def kd(step: Step, temperature: float = 4.0) -> Tensor:
    """Soft targets ``T^2 KL(softmax(z_t/T) || softmax(z_s/T))``."""
    return kd_loss(step.student, step.teacher, temperature)


@register_loss(
    "soft-ce", tasks=("classification",), check=_check_soft_ce, paper="Hinton, Vinyals & Dean 2015"
)
def soft_ce(step: Step, temperature: float = 1.0) -> Tensor:
    """Cross-entropy to the teacher's soft targets ``-T^2 sum p_t log p_s``."""
    return soft_cross_entropy(step.student, step.teacher, temperature)


@register_loss("output-mse", paper="Ba & Caruana 2014 (logit matching)")
def output_mse(step: Step) -> Tensor:
    """Mean squared error between student and teacher outputs ``mean (z_s - z_t)^2`` (logits or reconstructions)."""
    return F.mse_loss(step.student, step.teacher)
