"""Plain training on the task's own target: hard labels, or the input itself for autoencoders."""

from __future__ import annotations

from torch import nn

from edgekd.distill.compose import LossSpec
from edgekd.distill.methods.base import ComposedDistiller, register_method


@register_method("supervised")
class Supervised(ComposedDistiller):
    """``L = CE(y, softmax(z_s))`` (classification) or ``mean (f(x) - x)^2`` (reconstruction)."""

    needs_teacher = False

    def __init__(
        self, student: nn.Module, teacher: nn.Module | None = None, label_smoothing: float = 0.0, **context
    ) -> None:
        task = context.get("task", "classification")
        losses = (
            [LossSpec("recon-mse")]
            if task == "reconstruction"
            else [LossSpec("ce", 1.0, {"label_smoothing": label_smoothing})]
        )
        super().__init__(student, None, losses=losses, **context)
