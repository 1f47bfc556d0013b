"""Plain training on hard labels (teachers and baseline students)."""

from __future__ import annotations

from torch import Tensor, nn

from edgekd.distill.losses import cross_entropy
from edgekd.distill.methods.base import Distiller, register_method


@register_method("supervised")
class Supervised(Distiller):
    """``L = CE(y, softmax(z_s))``."""

    needs_teacher = False

    def __init__(
        self, student: nn.Module, teacher: nn.Module | None = None, label_smoothing: float = 0.0
    ) -> None:
        super().__init__(student, None)
        self.label_smoothing = label_smoothing

    def forward_train(self, x: Tensor, y: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        logits = self.student(x)
        return logits, {"ce": cross_entropy(logits, y, self.label_smoothing)}
