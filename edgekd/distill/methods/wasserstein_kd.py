"""Wasserstein (worst-case) knowledge distillation for few data.

Kong et al., "Learning Student Networks with Few Data", AAAI 2020: instead of the empirical risk on the
few available examples, the student minimises the worst-case distillation risk over a Wasserstein ball
around the empirical distribution. To first order that is the empirical risk plus ``eps`` times the norm
of the loss gradient with respect to the inputs:

``L_W = mean_i l(o_S(x_i), o_T(x_i)) + eps * mean_i || grad_{x_i} l(o_S(x_i), o_T(x_i)) ||_2``

with ``l`` the (per-example) Hinton KD loss. The penalty is differentiated through
(double back-propagation, ``torch.autograd.grad(..., create_graph=True)``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from edgekd.distill.losses import cross_entropy, register_loss
from edgekd.distill.methods.base import Distiller, register_method
from edgekd.errors import EdgekdError


def kd_per_example(student_logits: Tensor, teacher_logits: Tensor, temperature: float = 4.0) -> Tensor:
    """``T^2 * KL(softmax(z_t / T) || softmax(z_s / T))`` per example, shape ``(N,)``."""
    t = float(temperature)
    log_p_s = F.log_softmax(student_logits / t, dim=1)
    log_p_t = F.log_softmax(teacher_logits / t, dim=1)
    return (log_p_t.exp() * (log_p_t - log_p_s)).sum(dim=1) * (t * t)


def input_gradient_norm(per_example_loss: Tensor, inputs: Tensor, create_graph: bool = True) -> Tensor:
    """``|| grad_{x_i} sum_j l_j ||_2`` per example (equals ``grad_{x_i} l_i`` when examples do not
    interact, e.g. no batch-norm in training mode). ``inputs`` must require grad and feed the loss."""
    (g,) = torch.autograd.grad(per_example_loss.sum(), inputs, create_graph=create_graph)
    # the small constant keeps the double-backward finite where the gradient vanishes
    return (g.flatten(1).pow(2).sum(dim=1) + 1e-12).sqrt()


@register_loss("wasserstein-kd")
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


@register_method("wasserstein-kd")
class WassersteinKD(Distiller):
    """``L = a * L_W(S, T; eps) + (1 - a) * CE(y, softmax(z_s))`` (hard labels optional, ``a = 1``
    uses none); ``L_W`` is :func:`wasserstein_kd_loss`."""

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module | None,
        eps: float = 0.1,
        temperature: float = 4.0,
        alpha: float = 0.9,
    ) -> None:
        super().__init__(student, teacher)
        if eps < 0:
            raise EdgekdError(f"method.params.eps={eps}: must be >= 0 (the Wasserstein ball radius)")
        if temperature <= 0:
            raise EdgekdError(f"method.params.temperature={temperature}: must be > 0")
        if not 0.0 <= alpha <= 1.0:
            raise EdgekdError(f"method.params.alpha={alpha}: must be in [0, 1]")
        self.eps = float(eps)
        self.temperature = float(temperature)
        self.alpha = float(alpha)

    def forward_train(self, x: Tensor, y: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        x = x.detach().clone().requires_grad_(self.eps > 0)
        logits = self.student(x)
        t_logits = self.teacher_logits(x.detach())
        kd, gp = wasserstein_kd_loss(
            logits, t_logits, x, eps=self.eps, temperature=self.temperature, return_terms=True
        )
        terms = {"kd": self.alpha * kd, "grad_penalty": self.alpha * gp}
        if self.alpha < 1.0:
            terms["ce"] = (1.0 - self.alpha) * cross_entropy(logits, y)
        return logits, terms
