"""Relations between layers or between examples, rather than the features themselves.

* ``fsp`` — flow of solution procedure (Yim et al., CVPR 2017): for two layers ``F1 (C1 x HW)`` and
  ``F2 (C2 x HW)`` of one network, ``G = F1 F2^T / HW`` (the larger map average-pooled to the smaller);
  loss ``mean (G_s - G_t)^2`` over examples and entries. Give two paths each
  (``student: features.0,features.1``); student maps go through adapters when widths differ.
* ``rkd-distance`` / ``rkd-angle`` — relational KD (Park et al., CVPR 2019) on flattened embeddings
  ``e`` (channels may differ): distance ``psi(i,j) = ||e_i - e_j|| / mu`` with ``mu`` the mean distance
  over pairs ``i != j``, loss the mean Huber (smooth L1) of ``psi_s - psi_t`` over pairs ``i != j``;
  angle ``psi(i,j,k) = <(e_i - e_j)/||.||, (e_k - e_j)/||.||>``, loss the mean Huber over all ``N^3``
  triplets (a zero difference vector contributes 0 on both sides).
* ``sp`` — similarity-preserving KD (Tung & Mori, ICCV 2019): ``G = Q Q^T`` over the batch, rows
  L2-normalised; loss ``||G_s - G_t||_F^2 / N^2``.
* ``pkt`` — probabilistic knowledge transfer (Passalis & Tefas, ECCV 2018) on flattened embeddings
  (widths may differ): cosine similarities ``K_ij = (<e_i, e_j> / (||e_i|| ||e_j||) + 1) / 2`` turned
  into conditional probabilities ``P_{j|i} = K_ij / sum_j K_ij``; loss the mean over all ``N^2`` pairs of
  ``P^t_{j|i} log((P^t_{j|i} + eps) / (P^s_{j|i} + eps))`` (KL between the two neighbourhoods).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from edgekd.distill.losses.base import Step, register_loss
from edgekd.distill.losses.checks import need_maps, one_pair
from edgekd.errors import EdgekdError


def fsp_matrix(f1: Tensor, f2: Tensor) -> Tensor:
    """``(N, C1, H, W), (N, C2, H', W') -> (N, C1, C2)``, ``G = F1 F2^T / HW`` after pooling to one size."""
    if f1.shape[2:] != f2.shape[2:]:
        size = min(f1.shape[2:], f2.shape[2:])
        f1, f2 = F.adaptive_avg_pool2d(f1, size), F.adaptive_avg_pool2d(f2, size)
    a, b = f1.flatten(2), f2.flatten(2)
    return a @ b.transpose(1, 2) / a.shape[2]


def _check_fsp(s_shapes, t_shapes, params, where) -> None:
    if len(s_shapes) != 2:
        raise EdgekdError(
            f"{where}: fsp relates two layers of each network; give two comma-separated paths each "
            "(student: features.0,features.1)"
        )
    need_maps(s_shapes, t_shapes, where, "fsp")


@register_loss("fsp", features=True, check=_check_fsp, paper="Yim et al. 2017 (FSP matrices)")
def fsp(step: Step) -> Tensor:
    """Flow between two layers ``mean (G_s - G_t)^2`` with ``G = F1 F2^T / HW``."""
    return F.mse_loss(fsp_matrix(*step.fs), fsp_matrix(*step.ft))


def _check_one(s_shapes, t_shapes, params, where) -> None:
    one_pair(s_shapes, where, "this relational loss")


def _embed(f: Tensor) -> Tensor:
    return f.flatten(1)


def _off_diagonal(m: Tensor) -> Tensor:
    n = m.shape[0]
    return m[~torch.eye(n, dtype=torch.bool, device=m.device)]


def rkd_distances(e: Tensor) -> Tensor:
    d = (e[:, None] - e[None]).pow(2).sum(-1).clamp(min=1e-12).sqrt()
    off = _off_diagonal(d)
    return off / off.mean().clamp(min=1e-12)


def _huber_to_teacher(psi, step: Step) -> Tensor:
    """Mean Huber between the relations ``psi`` of the student's and the (fixed) teacher's embeddings."""
    with torch.no_grad():
        t = psi(_embed(step.ft))
    return F.smooth_l1_loss(psi(_embed(step.fs)), t)


@register_loss("rkd-distance", features=True, adapter=False, check=_check_one, paper="Park et al. 2019 (RKD)")
def rkd_distance(step: Step) -> Tensor:
    """RKD distance: Huber of normalised pairwise distances ``||e_i - e_j|| / mu``, pairs ``i != j``."""
    return _huber_to_teacher(rkd_distances, step)


def rkd_angles(e: Tensor) -> Tensor:
    """``(N, N, N)``: ``cos`` of the angle at ``j`` between ``e_i`` and ``e_k`` (index ``[j, i, k]``)."""
    diff = F.normalize(e[None] - e[:, None], p=2, dim=2)  # [j, i] = (e_i - e_j) / ||.||
    return diff @ diff.transpose(1, 2)


@register_loss("rkd-angle", features=True, adapter=False, check=_check_one, paper="Park et al. 2019 (RKD)")
def rkd_angle(step: Step) -> Tensor:
    """RKD angle: Huber of ``cos angle(e_i - e_j, e_k - e_j)`` over all triplets."""
    return _huber_to_teacher(rkd_angles, step)


def similarity(f: Tensor) -> Tensor:
    q = _embed(f)
    return F.normalize(q @ q.t(), p=2, dim=1)


@register_loss(
    "sp", features=True, adapter=False, check=_check_one, paper="Tung & Mori 2019 (similarity-preserving)"
)
def similarity_preserving(step: Step) -> Tensor:
    """Similarity-preserving ``||G_s - G_t||_F^2 / N^2``, ``G = normalize_rows(Q Q^T)`` over the batch."""
    n = step.fs.shape[0]
    return (similarity(step.fs) - similarity(step.ft)).pow(2).sum() / (n * n)


def pkt_probabilities(e: Tensor) -> Tensor:
    """``(N, D) -> (N, N)``: row-normalised cosine kernel ``P_{j|i}`` of the embeddings (rows sum to 1)."""
    e = F.normalize(e, p=2, dim=1)
    k = (e @ e.t() + 1) / 2
    return k / k.sum(dim=1, keepdim=True)


@register_loss(
    "pkt", features=True, adapter=False, check=_check_one, paper="Passalis & Tefas, ECCV 2018 (PKT)"
)
def pkt(step: Step, eps: float = 1e-7) -> Tensor:
    """PKT: ``mean_ij P^t_{j|i} log((P^t_{j|i} + eps) / (P^s_{j|i} + eps))`` of cosine-kernel neighbourhoods."""
    with torch.no_grad():
        p_t = pkt_probabilities(_embed(step.ft))
    p_s = pkt_probabilities(_embed(step.fs))
    return (p_t * torch.log((p_t + eps) / (p_s + eps))).mean()
