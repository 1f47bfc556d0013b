"""Hinton knowledge distillation (Hinton, Vinyals & Dean, 2015)."""

from __future__ import annotations

from torch import Tensor, nn

from edgekd.distill.losses import cross_entropy, kd_loss
from edgekd.distill.methods.base import Distiller, register_method
from edgekd.errors import EdgekdError


@register_method("kd")
class HintonKD(Distiller):
    """``L = (1 - a) * CE(y, softmax(z_s)) + a * T^2 * KL(softmax(z_t / T) || softmax(z_s / T))``."""

    def __init__(
        self, student: nn.Module, teacher: nn.Module | None, temperature: float = 4.0, alpha: float = 0.9
    ) -> None:
        super().__init__(student, teacher)
        if temperature <= 0:
            raise EdgekdError(f"method.params.temperature={temperature}: must be > 0")
        if not 0.0 <= alpha <= 1.0:
            raise EdgekdError(f"method.params.alpha={alpha}: must be in [0, 1]")
        self.temperature = float(temperature)
        self.alpha = float(alpha)

    def forward_train(self, x: Tensor, y: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        logits = self.student(x)
        t_logits = self.teacher_logits(x)
        terms = {"kd": self.alpha * kd_loss(logits, t_logits, self.temperature)}
        if self.alpha < 1.0:
            terms["ce"] = (1.0 - self.alpha) * cross_entropy(logits, y)
        return logits, terms
