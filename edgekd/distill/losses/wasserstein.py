"""Wasserstein (worst-case) knowledge distillation for few data (Kong et al., AAAI 2020).

Instead of the empirical risk on the few available examples, the student minimises the worst-case
distillation risk over a Wasserstein ball around the empirical distribution. To first order that is the
empirical risk plus ``eps`` times the norm of the loss gradient with respect to the inputs:

``L_W = mean_i l(o_S(x_i), o_T(x_i)) + eps * mean_i || grad_{x_i} l(o_S(x_i), o_T(x_i)) ||_2``

with ``l`` the (per-example) Hinton KD loss. The penalty is differentiated through (double
back-propagation, ``torch.autograd.grad(..., create_graph=True)``).
"""

from __future__ import annotations

import torch
from torch import Tensor

from edgekd.distill.losses.base import Step, register_loss
from edgekd.distill.losses.checks import positive
from edgekd.distill.losses.logits import kd_per_example
from edgekd.errors import EdgekdError


def input_gradient_norm(per_example_loss: Tensor, inputs: Tensor, create_graph: bool = True) -> Tensor:
    """``|| grad_{x_i} sum_j l_j ||_2`` per example (equals ``grad_{x_i} l_i`` when examples do not
    interact, e.g. no batch-norm in training mode). ``inputs`` must require grad and feed the loss."""
    (g,) = torch.autograd.grad(per_example_loss.sum(), inputs, create_graph=create_graph)
    # the small constant keeps the double-backward finite where the gradient vanishes
    return (g.flatten(1).pow(2).sum(dim=1) + 1e-12).sqrt()


def wasserstein_kd_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    inputs: Tensor,
    eps: float = 0.1,
    temperature: float = 4.0,
    return_terms: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """Wasserstein KD loss (Kong et al., AAAI 2020).

    ``L_W = mean_i l_i + eps * mean_i || grad_{x_i} l_i ||_2`` with ``l_i`` the per-example KD loss
    ``T^2 KL(p_T || p_S)``. ``student_logits`` must be computed from ``inputs`` with
    ``inputs.requires_grad_(True)``. With ``return_terms`` returns ``(mean loss, eps * mean grad norm)``.
    """
    if eps < 0:
        raise EdgekdError(f"method.params.eps={eps}: must be >= 0")
    per = kd_per_example(student_logits, teacher_logits, temperature)
    base = per.mean()
    penalty = eps * input_gradient_norm(per, inputs).mean() if eps > 0 else base.new_zeros(())
    if return_terms:
        return base, penalty
    return base + penalty


def _check(s_shapes, t_shapes, params, where) -> None:
    positive(params, "temperature", where, 4.0)
    eps = float(params.get("eps", 0.1))
    if not eps >= 0:
        raise EdgekdError(f"{where}: params.eps={eps}: must be >= 0 (the radius of the Wasserstein ball)")


@register_loss(
    "wasserstein-kd", tasks=("classification",), input_grad=True, check=_check, paper="Kong et al., AAAI 2020"
)
def wasserstein_kd(step: Step, eps: float = 0.1, temperature: float = 4.0) -> dict[str, Tensor]:
    """Worst-case KD ``mean l_i + eps mean ||grad_x l_i||`` (terms ``kd`` and ``grad_penalty``)."""
    kd, gp = wasserstein_kd_loss(
        step.student, step.teacher, step.x, eps=eps, temperature=temperature, return_terms=True
    )
    return {"kd": kd, "grad_penalty": gp}
