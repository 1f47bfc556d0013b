"""Wasserstein KD for few data (Kong et al., AAAI 2020) as a composition of registered losses.

``L = a * L_W(S, T; eps) + (1 - a) * CE(y, softmax(z_s))``; ``L_W`` is the ``wasserstein-kd`` loss
(:mod:`edgekd.distill.losses.wasserstein`).
"""

from __future__ import annotations

from torch import nn

from edgekd.distill.methods.base import (
    ComposedDistiller,
    check_positive,
    check_unit,
    register_method,
    with_ce,
)
from edgekd.errors import EdgekdError


@register_method("wasserstein-kd")
class WassersteinKD(ComposedDistiller):
    """``L = a * L_W(S, T; eps) + (1 - a) * CE(y, softmax(z_s))`` (``a = 1`` uses no labels)."""

    needs_teacher = True

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module | None,
        eps: float = 0.1,
        temperature: float = 4.0,
        alpha: float = 0.9,
        **context,
    ) -> None:
        if eps < 0:
            raise EdgekdError(f"method.params.eps={eps}: must be >= 0 (the Wasserstein ball radius)")
        check_positive("temperature", temperature)
        check_unit("alpha", alpha)
        losses = with_ce("wasserstein-kd", alpha, {"eps": float(eps), "temperature": float(temperature)})
        super().__init__(student, teacher, losses=losses, **context)
