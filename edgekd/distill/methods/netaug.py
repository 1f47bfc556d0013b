"""NetAug: Network Augmentation for tiny deep learning (Cai et al., ICLR 2022).

Tiny models underfit, so instead of regularising them NetAug trains the tiny (base) model inside wider
models that share its weights. Every step:

``L = L(base) + alpha * L(augmented)``

where the augmented model is sampled at random (a width multiplier per stage from ``width_mults``, an
expand ratio per inverted-residual block from ``expand_ratios``) and its leading channel slices are the
base model (see :mod:`edgekd.models.dynamic`). Gradients of both terms accumulate into the shared
weights and one optimizer step is taken. Augmentation stops after ``aug_fraction`` of the epochs; the
base model's BN statistics are re-estimated at the end. With a teacher (``edgekd distill``) both terms
use the Hinton KD loss (NetAug+KD): ``l = kd_alpha * T^2 KL(p_T || p_S) + (1 - kd_alpha) * CE``; a
recipe's ``losses:`` list (output losses only) replaces that ``l``.
"""

from __future__ import annotations

import random

from torch import Tensor, nn

from edgekd.distill.compose import LossComposer, LossSpec
from edgekd.distill.losses import Step
from edgekd.distill.losses.presets import check_positive, check_unit, with_ce
from edgekd.distill.methods.base import Distiller, register_method
from edgekd.errors import EdgekdError
from edgekd.models.dynamic import SuperNet


@register_method("netaug")
class NetAug(Distiller):
    """``L = l(base) + alpha * l(sampled augmented model)`` with shared weights (Cai et al., 2022)."""

    needs_teacher = False
    own_losses = False  # the recipe's `losses:` list, if any, is the base loss l

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
        losses: list[LossSpec] | None = None,
        task: str = "classification",
    ) -> None:
        super().__init__(student, teacher)
        width_mults = [1.0, 1.8, 2.6] if width_mults is None else list(width_mults)
        if not width_mults or any(float(w) < 1.0 for w in width_mults):
            raise EdgekdError(
                f"method.params.width_mults={width_mults}: every width multiplier must be >= 1.0"
            )
        if alpha < 0:
            raise EdgekdError(f"method.params.alpha={alpha}: must be >= 0")
        check_unit("aug_fraction", aug_fraction)
        check_positive("temperature", temperature)
        check_unit("kd_alpha", kd_alpha)
        # the engine trains and evaluates ``student``: the supernet, in base mode outside forward_train
        self.student = SuperNet(student, width_mults, expand_ratios)
        self.alpha = float(alpha)
        self.aug_fraction = float(aug_fraction)
        self.bn_samples = int(bn_samples)
        self.rng = random.Random(seed)
        self.augment = self.alpha > 0 and self.aug_fraction > 0
        if losses is None:
            losses = [LossSpec("ce")]
            if teacher is not None:
                losses = with_ce("kd", kd_alpha, {"temperature": float(temperature)})
        if any(s.student or s.teacher for s in losses):
            raise EdgekdError(
                "method netaug: feature losses (student:/teacher: paths) are not supported; use output losses"
            )
        self.composer = LossComposer(losses, student, teacher, task=task)

    def get_extra_state(self) -> dict:
        """The sampler's RNG state travels in the training checkpoint, so ``--resume`` is exact."""
        version, internal, gauss = self.rng.getstate()
        return {"rng_version": version, "rng_internal": list(internal), "rng_gauss": gauss}

    def set_extra_state(self, state: dict) -> None:
        self.rng.setstate((state["rng_version"], tuple(state["rng_internal"]), state["rng_gauss"]))

    @property
    def supernet(self) -> SuperNet:
        return self.student  # type: ignore[return-value]

    def _loss(self, x: Tensor, logits: Tensor, t_logits: Tensor | None, y: Tensor) -> Tensor:
        return sum(self.composer(Step(x=x, y=y, student=logits, teacher=t_logits)).values())

    def on_epoch_start(self, epoch: int, epochs: int) -> None:
        self.augment = self.alpha > 0 and epoch < self.aug_fraction * epochs

    def forward_train(self, x: Tensor, y: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        t_logits = self.teacher_outputs(x) if self.teacher is not None else None
        self.supernet.set_base()
        logits = self.supernet(x)
        terms = {"base": self._loss(x, logits, t_logits, y)}
        if self.augment:
            self.supernet.sample(self.rng)
            try:
                aug_logits = self.supernet(x)
            finally:
                self.supernet.set_base()
            terms["aug"] = self.alpha * self._loss(x, aug_logits, t_logits, y)
        return logits, terms

    def on_train_end(self, train_x: Tensor) -> None:
        self.supernet.recalibrate_bn(train_x, max_samples=self.bn_samples)
        self.supernet.eval()

    def export_student(self) -> nn.Module:
        return self.supernet.export()
