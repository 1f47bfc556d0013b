"""Hinton knowledge distillation (Hinton, Vinyals & Dean, 2015) as a composition of registered losses."""

from __future__ import annotations

from torch import nn

from edgekd.distill.methods.base import ComposedDistiller, register_method, with_ce
from edgekd.errors import EdgekdError


@register_method("kd")
class HintonKD(ComposedDistiller):
    """``L = (1 - a) * CE(y, softmax(z_s)) + a * T^2 * KL(softmax(z_t / T) || softmax(z_s / T))``."""

    needs_teacher = True

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module | None,
        temperature: float = 4.0,
        alpha: float = 0.9,
        **context,
    ) -> None:
        if temperature <= 0:
            raise EdgekdError(f"method.params.temperature={temperature}: must be > 0")
        if not 0.0 <= alpha <= 1.0:
            raise EdgekdError(f"method.params.alpha={alpha}: must be in [0, 1]")
        losses = with_ce("kd", alpha, {"temperature": float(temperature)})
        super().__init__(student, teacher, losses=losses, **context)
