"""Hinton knowledge distillation (Hinton, Vinyals & Dean, 2015) as a composition of registered losses."""

from __future__ import annotations

from torch import nn

from edgekd.distill.methods.base import (
    ComposedDistiller,
    check_positive,
    check_unit,
    register_method,
    with_ce,
)


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
        check_positive("temperature", temperature)
        check_unit("alpha", alpha)
        losses = with_ce("kd", alpha, {"temperature": float(temperature)})
        super().__init__(student, teacher, losses=losses, **context)
