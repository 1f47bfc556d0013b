"""NetAug: Network Augmentation for tiny deep learning (Cai et al., ICLR 2022).

Tiny models underfit, so instead of regularising them NetAug trains the tiny (base) model inside wider
models that share its weights. Every step:

``L = L(base) + alpha * L(augmented)``

where the augmented model is sampled at random (a width multiplier per stage from ``width_mults``, an
expand ratio per inverted-residual block from ``expand_ratios``) and its leading channel slices are the
base model (see :mod:`edgekd.models.dynamic`). Gradients of both terms accumulate into the shared
weights and one optimizer step is taken. Augmentation stops after ``aug_fraction`` of the epochs; the
base model's BN statistics are re-estimated at the end. With a teacher (``edgekd distill``) both terms
use the Hinton KD loss (NetAug+KD): ``l = kd_alpha * T^2 KL(p_T || p_S) + (1 - kd_alpha) * CE``.
"""

from __future__ import annotations

import random

from torch import Tensor, nn

from edgekd.distill.losses import cross_entropy, kd_loss
from edgekd.distill.methods.base import Distiller, register_method
from edgekd.errors import EdgekdError
from edgekd.models.dynamic import SuperNet


@register_method("netaug")
class NetAug(Distiller):
    """``L = l(base) + alpha * l(sampled augmented model)`` with shared weights (Cai et al., 2022)."""

    needs_teacher = False

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module | None = None,
        width_mults: list[float] | None = None,
        expand_ratios: list[float] | None = None,
        alpha: float = 1.0,
        aug_fraction: float = 1.0,
        temperature: float = 4.0,
        kd_alpha: float = 0.9,
        bn_samples: int = 2000,
        seed: int = 0,
    ) -> None:
        super().__init__(student, teacher)
        width_mults = [1.0, 1.8, 2.6] if width_mults is None else list(width_mults)
        if not width_mults or any(float(w) < 1.0 for w in width_mults):
            raise EdgekdError(
                f"method.params.width_mults={width_mults}: every width multiplier must be >= 1.0"
            )
        if alpha < 0:
            raise EdgekdError(f"method.params.alpha={alpha}: must be >= 0")
        if not 0.0 <= aug_fraction <= 1.0:
            raise EdgekdError(f"method.params.aug_fraction={aug_fraction}: must be in [0, 1]")
        if temperature <= 0:
            raise EdgekdError(f"method.params.temperature={temperature}: must be > 0")
        if not 0.0 <= kd_alpha <= 1.0:
            raise EdgekdError(f"method.params.kd_alpha={kd_alpha}: must be in [0, 1]")
        # the engine trains and evaluates ``student``: the supernet, in base mode outside forward_train
        self.student = SuperNet(student, width_mults, expand_ratios)
        self.alpha = float(alpha)
        self.aug_fraction = float(aug_fraction)
        self.temperature = float(temperature)
        self.kd_alpha = float(kd_alpha)
        self.bn_samples = int(bn_samples)
        self.rng = random.Random(seed)
        self.augment = self.alpha > 0 and self.aug_fraction > 0

    def get_extra_state(self) -> dict:
        """The sampler's RNG state travels in the training checkpoint, so ``--resume`` is exact."""
        version, internal, gauss = self.rng.getstate()
        return {"rng_version": version, "rng_internal": list(internal), "rng_gauss": gauss}

    def set_extra_state(self, state: dict) -> None:
        self.rng.setstate((state["rng_version"], tuple(state["rng_internal"]), state["rng_gauss"]))

    @property
    def supernet(self) -> SuperNet:
        return self.student  # type: ignore[return-value]

    def _loss(self, logits: Tensor, t_logits: Tensor | None, y: Tensor) -> Tensor:
        if t_logits is None:
            return cross_entropy(logits, y)
        loss = self.kd_alpha * kd_loss(logits, t_logits, self.temperature)
        if self.kd_alpha < 1.0:
            loss = loss + (1.0 - self.kd_alpha) * cross_entropy(logits, y)
        return loss

    def on_epoch_start(self, epoch: int, epochs: int) -> None:
        self.augment = self.alpha > 0 and epoch < self.aug_fraction * epochs

    def forward_train(self, x: Tensor, y: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        t_logits = self.teacher_logits(x) if self.teacher is not None else None
        self.supernet.set_base()
        logits = self.supernet(x)
        terms = {"base": self._loss(logits, t_logits, y)}
        if self.augment:
            self.supernet.sample(self.rng)
            try:
                aug_logits = self.supernet(x)
            finally:
                self.supernet.set_base()
            terms["aug"] = self.alpha * self._loss(aug_logits, t_logits, y)
        return logits, terms

    def on_train_end(self, train_x: Tensor) -> None:
        self.supernet.recalibrate_bn(train_x, max_samples=self.bn_samples)
        self.supernet.eval()

    def export_student(self) -> nn.Module:
        return self.supernet.export()
