"""Attention transfer (Zagoruyko & Komodakis, ICLR 2017, "Paying More Attention to Attention").

Activation-based: the spatial attention map of a layer is ``Q = sum_c |A_c|^p`` over its channels
(p = 2), flattened and L2-normalised; at each layer pair ``j`` the loss is
``mean_n || Q_S^j / ||Q_S^j||_2 - Q_T^j / ||Q_T^j||_2 ||_2``, summed over the pairs
(``student: features.0,features.1`` with ``teacher: features.0,features.1``). Channel counts may differ.

Gradient-based: ``J = d CE(y, softmax(z)) / d x`` for both networks; the loss is
``1/2 mean_n || J_S - J_T ||_2`` (differentiated through, double back-propagation).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from edgekd.distill.losses.base import Step, register_loss
from edgekd.distill.losses.checks import need_maps, positive, same_positions


def attention_map(a: Tensor, p: float = 2.0) -> Tensor:
    """``normalize(sum_c |a_c|^p)`` flattened per example, shape ``(N, H*W)``."""
    return F.normalize(a.abs().pow(p).sum(dim=1).flatten(1), dim=1)


def _check_at(s_shapes, t_shapes, params, where) -> None:
    need_maps(s_shapes, t_shapes, where, "attention transfer")
    same_positions(s_shapes, t_shapes, where, "attention transfer")
    positive(params, "p", where, 2.0)


def _pairs(step: Step) -> list[tuple[Tensor, Tensor]]:
    fs = step.fs if isinstance(step.fs, list) else [step.fs]
    ft = step.ft if isinstance(step.ft, list) else [step.ft]
    return list(zip(fs, ft))


@register_loss(
    "at", features=True, adapter=False, check=_check_at,
    paper="Zagoruyko & Komodakis 2017 (attention transfer)",
)  # fmt: skip
def attention_transfer(step: Step, p: float = 2.0) -> Tensor:
    """Activation attention ``sum_j mean_n ||Q_s/||Q_s|| - Q_t/||Q_t|| ||_2`` with ``Q = sum_c |A_c|^p``."""
    return sum((attention_map(s, p) - attention_map(t, p)).norm(dim=1).mean() for s, t in _pairs(step))


def input_gradient(logits: Tensor, y: Tensor, x: Tensor, create_graph: bool) -> Tensor:
    """``d sum_n CE(y_n, softmax(z_n)) / d x`` (per example, since examples do not interact)."""
    (g,) = torch.autograd.grad(F.cross_entropy(logits, y, reduction="sum"), x, create_graph=create_graph)
    return g


@register_loss(
    "gradient-at", tasks=("classification",), input_grad=True,
    paper="Zagoruyko & Komodakis 2017 (gradient-based attention)",
)  # fmt: skip
def gradient_attention(step: Step) -> Tensor:
    """Gradient attention ``1/2 mean_n ||dCE_s/dx - dCE_t/dx||_2`` (double back-propagation)."""
    j_s = input_gradient(step.student, step.y, step.x, create_graph=True)
    with torch.enable_grad():
        xt = step.x.detach().clone().requires_grad_(True)
        j_t = input_gradient(step.teacher_net(xt), step.y, xt, create_graph=False)
    return 0.5 * (j_s - j_t.detach()).flatten(1).norm(dim=1).mean()
