"""Privileged information / generalised distillation (Lopez-Paz et al., ICLR 2016).

The teacher reads the privileged input ``x*`` (``teacher: {path: ..., input: <name>}``; an ``.npz`` data
set provides it as ``priv_<name>``), the student only ``x``; the export sees only ``x``:

``L = (1 - lambda) CE(y, softmax(f_s(x))) + lambda CE(softmax(f_t(x*) / T), softmax(f_s(x)))``

(``imitation`` is lambda, ``temperature`` is T; the loss is ``generalized-kd``).
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


@register_method("privileged")
class GeneralizedDistillation(ComposedDistiller):
    """``(1 - l) CE(y, s(x)) + l CE(softmax(t(x*)/T), s(x))``: a teacher on privileged inputs teaches a student on x."""

    needs_teacher = True

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module | None,
        imitation: float = 0.5,
        temperature: float = 2.0,
        **context,
    ) -> None:
        check_unit("imitation", imitation)
        check_positive("temperature", temperature)
        losses = with_ce("generalized-kd", imitation, {"temperature": float(temperature)})
        super().__init__(student, teacher, losses=losses, **context)
