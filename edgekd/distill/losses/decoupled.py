"""Logit losses that beat Hinton KD on small students: they change *which* part of the teacher's output
distribution the student is asked to match.

* ``dkd`` — Decoupled KD (Zhao et al., CVPR 2022). With ``p = softmax(z / T)`` and the label ``y``,
  split KD into the target-class part and the non-target part:
  ``TCKD = KL(b_t || b_s)`` over the binary ``b = [p_y, 1 - p_y]``, and
  ``NCKD = KL(q_t || q_s)`` with ``q = softmax`` of the non-target logits ``z_{c != y} / T``;
  loss ``T^2 (alpha TCKD + beta NCKD)``, batch-averaged. Hinton KD is
  ``TCKD + (1 - p_y^t) NCKD``: DKD frees NCKD from the ``1 - p_y^t`` factor that suppresses it when the
  teacher is confident.
* ``dist`` — DIST (Huang et al., NeurIPS 2022): match relations rather than values, with the Pearson
  correlation ``rho``: inter-class ``1 - mean_i rho(p_s[i, :], p_t[i, :])`` (each example's class
  ranking) plus intra-class ``1 - mean_c rho(p_s[:, c], p_t[:, c])`` (each class over the batch);
  loss ``T^2 (beta inter + gamma intra)``. Robust to a large teacher-student gap.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from edgekd.distill.losses.base import Step, register_loss
from edgekd.distill.losses.checks import non_negative, positive

_EPS = 1e-8


def _binary_kl(p_t: Tensor, p_s: Tensor) -> Tensor:
    """``KL([p_t, 1-p_t] || [p_s, 1-p_s])`` per example, for target-class probabilities ``(N,)``."""
    p_t, p_s = p_t.clamp(_EPS, 1 - _EPS), p_s.clamp(_EPS, 1 - _EPS)
    return p_t * (p_t.log() - p_s.log()) + (1 - p_t) * ((1 - p_t).log() - (1 - p_s).log())


def _non_target_log_softmax(z: Tensor, target: Tensor, temperature: float) -> Tensor:
    """``log softmax`` over the classes other than ``target`` (the target's entry is -inf)."""
    mask = F.one_hot(target, z.shape[1]).bool()
    return F.log_softmax((z / temperature).masked_fill(mask, float("-inf")), dim=1)


def dkd_loss(student: Tensor, teacher: Tensor, target: Tensor, alpha: float = 1.0, beta: float = 8.0,
             temperature: float = 4.0) -> Tensor:  # fmt: skip
    """``T^2 (alpha TCKD + beta NCKD)`` averaged over the batch (Zhao et al. 2022)."""
    t = float(temperature)
    idx = target.long()[:, None]
    p_s = F.softmax(student / t, dim=1).gather(1, idx)[:, 0]
    p_t = F.softmax(teacher / t, dim=1).gather(1, idx)[:, 0]
    tckd = _binary_kl(p_t, p_s)
    log_q_s = _non_target_log_softmax(student, target.long(), t)
    log_q_t = _non_target_log_softmax(teacher, target.long(), t)
    q_t = log_q_t.exp()
    nckd = torch.where(q_t > 0, q_t * (log_q_t - log_q_s), torch.zeros_like(q_t)).sum(dim=1)
    return (alpha * tckd + beta * nckd).mean() * (t * t)


def pearson_distance(a: Tensor, b: Tensor, dim: int) -> Tensor:
    """``1 - rho(a, b)`` along ``dim`` (Pearson correlation: cosine of the mean-centred vectors)."""
    a = a - a.mean(dim=dim, keepdim=True)
    b = b - b.mean(dim=dim, keepdim=True)
    return 1 - F.cosine_similarity(a, b, dim=dim, eps=_EPS)


def dist_loss(student: Tensor, teacher: Tensor, beta: float = 1.0, gamma: float = 1.0,
              temperature: float = 1.0) -> Tensor:  # fmt: skip
    """``T^2 (beta inter + gamma intra)`` with Pearson distances of the softened outputs (Huang et al. 2022)."""
    t = float(temperature)
    p_s, p_t = F.softmax(student / t, dim=1), F.softmax(teacher / t, dim=1)
    inter = pearson_distance(p_s, p_t, dim=1).mean()
    intra = pearson_distance(p_s, p_t, dim=0).mean()
    return (beta * inter + gamma * intra) * (t * t)


def _check_dkd(s_shapes, t_shapes, params, where) -> None:
    positive(params, "temperature", where, 4.0)
    non_negative(params, "alpha", where, 1.0)
    non_negative(params, "beta", where, 8.0)


def _check_dist(s_shapes, t_shapes, params, where) -> None:
    positive(params, "temperature", where, 1.0)
    non_negative(params, "beta", where, 1.0)
    non_negative(params, "gamma", where, 1.0)


@register_loss("dkd", tasks=("classification",), check=_check_dkd, paper="Zhao et al., CVPR 2022 (DKD)")
def dkd(step: Step, alpha: float = 1.0, beta: float = 8.0, temperature: float = 4.0) -> Tensor:
    """Decoupled KD ``T^2 (alpha KL(b_t||b_s) + beta KL(q_t||q_s))``: target / non-target parts apart."""
    y = step.y.argmax(1) if step.y.dim() == 2 else step.y  # mixed labels (mixup): the dominant class
    return dkd_loss(step.student, step.teacher, y, alpha, beta, temperature)


@register_loss(
    "dist", tasks=("classification",), check=_check_dist, paper="Huang et al., NeurIPS 2022 (DIST)"
)
def dist(step: Step, beta: float = 1.0, gamma: float = 1.0, temperature: float = 1.0) -> Tensor:
    """DIST ``T^2 (beta (1 - rho_inter) + gamma (1 - rho_intra))``: Pearson relations of the soft outputs."""
    return dist_loss(step.student, step.teacher, beta, gamma, temperature)
