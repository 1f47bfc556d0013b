"""Noisy sequential (Born-Again) training of autoencoders for anomaly detection (the seed material).

Generation i minimises ``(1 - a) * MSE(x, f_i(x_noise)) + a * MSE(f_i(x), f_{i-1}(x))`` where
``x_noise`` adds N(0, sigma^2) noise to a fraction ``p`` of each mini-batch and ``f_{i-1}`` is the previous
generation (the run's teacher, or the mean reconstruction of an ensemble of generations). Without a
teacher (generation 1) ``a`` is 0: a denoising autoencoder. Chain generations with
``scheme: {name: born-again}``; the noise generator's state is checkpointed, so ``--resume`` is exact.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from edgekd.distill.losses.presets import check_unit
from edgekd.distill.methods.base import Distiller, register_method
from edgekd.errors import EdgekdError
from edgekd.timeseries.sequential import DEFAULT_SIGMA, noisy_fraction


@register_method("noisy-sequential")
class NoisySequential(Distiller):
    """``(1-a) MSE(x, f(x_noise)) + a MSE(f(x), f_prev(x))``, noise on a fraction p of the batch."""

    needs_teacher = False

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module | None = None,
        alpha: float = 0.5,
        fraction: float = 0.5,
        sigma: float = DEFAULT_SIGMA,
        seed: int = 0,
        *,
        task: str = "classification",
    ) -> None:
        super().__init__(student, teacher)
        if task != "reconstruction":
            raise EdgekdError(
                f"method noisy-sequential: for autoencoders (task reconstruction), not {task!r}"
            )
        check_unit("alpha", alpha)
        check_unit("fraction", fraction)
        if sigma < 0:
            raise EdgekdError(f"method.params.sigma={sigma}: must be >= 0")
        self.alpha = float(alpha) if teacher is not None else 0.0
        self.fraction, self.sigma = float(fraction), float(sigma)
        self.generator = torch.Generator().manual_seed(int(seed))

    def get_extra_state(self) -> dict:
        return {"generator": self.generator.get_state()}

    def set_extra_state(self, state: dict) -> None:
        self.generator.set_state(state["generator"])

    def forward_train(self, x: Tensor, y: Tensor | None) -> tuple[Tensor, dict[str, Tensor]]:
        x_noise, _ = noisy_fraction(x, self.fraction, self.sigma, self.generator)
        terms = {"recon_noisy": (1.0 - self.alpha) * F.mse_loss(self.student(x_noise), x)}
        out = self.student(x)
        if self.alpha > 0:
            terms["previous"] = self.alpha * F.mse_loss(out, self.teacher_outputs(x))
        return out, terms
