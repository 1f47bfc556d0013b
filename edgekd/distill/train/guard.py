"""The divergence guard: stop with a clear message on a NaN/inf or exploding loss, or non-finite weights,
after restoring the last good epoch."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from edgekd.distill.train.checkpoint import Checkpointer
from edgekd.errors import EdgekdError

REFERENCE_STEPS = 10  # steps whose mean loss is the reference of the explosion rule


class TrainingDiverged(EdgekdError):
    """The loss became NaN/inf or exploded, or a parameter/buffer became non-finite.

    When a good epoch exists, the distiller has been restored to it (``last_good_epoch``) before raising.
    """

    def __init__(self, message: str, last_good_epoch: int | None) -> None:
        super().__init__(message)
        self.last_good_epoch = last_good_epoch


def non_finite_tensors(module: nn.Module) -> list[str]:
    """Names of parameters and buffers (e.g. batch-norm statistics) holding NaN or inf."""
    bad = [n for n, p in module.named_parameters() if not torch.isfinite(p).all()]
    bad += [n for n, b in module.named_buffers() if b.is_floating_point() and not torch.isfinite(b).all()]
    return bad


class DivergenceGuard:
    """Checks every step's loss and every epoch's weights; ``reference`` (the first steps' losses) is
    part of the checkpoint so a resumed run applies the same rule."""

    def __init__(self, factor: float, label: str, checkpointer: Checkpointer) -> None:
        self.factor, self.label, self.checkpointer = factor, label, checkpointer
        self.reference: list[float] = []

    def check_loss(self, loss: Tensor, terms: dict[str, Tensor], epoch: int, step: int) -> None:
        """NaN/inf, or (after the first REFERENCE_STEPS steps) above divergence_factor x their mean loss."""
        value = float(loss.detach())
        where = f"at epoch {epoch + 1} step {step + 1}"
        if not math.isfinite(value):
            bad = [k for k, v in terms.items() if not torch.isfinite(v)] or ["total"]
            self.diverged(f"loss term {bad[0]!r} became {value} {where}")
        ref = self.reference
        if len(ref) < REFERENCE_STEPS:
            ref.append(value)
            return
        factor = self.factor
        limit = factor * max(sum(ref) / len(ref), 1e-3)
        if factor > 0 and value > limit:
            worst = max(terms, key=lambda k: float(terms[k].detach())) if terms else "total"
            self.diverged(
                f"loss exploded to {value:.3g} {where} (term {worst!r}; the rule: above train.divergence_factor="
                f"{factor:g} x {limit / factor:.3g}, the mean of the first {REFERENCE_STEPS} steps)"
            )

    def check_weights(self, module: nn.Module, epoch: int) -> None:
        """Parameters or buffers that became non-finite while the loss stayed finite (e.g. BN statistics)."""
        bad = non_finite_tensors(module)
        if bad:
            self.diverged(f"{len(bad)} parameter(s)/buffer(s) became non-finite in epoch {epoch} "
                          f"(first: {bad[0]!r}) although the loss stayed finite")  # fmt: skip

    def diverged(self, what: str) -> None:
        """Restore the last good epoch (if any) and raise TrainingDiverged."""
        last_good = self.checkpointer.restore_last_good()
        path = self.checkpointer.path
        kept = f"last good checkpoint kept ({path}, epoch {last_good})" if last_good else "no good epoch yet"
        raise TrainingDiverged(f"{self.label}: {what}; {kept}; lower train.lr or check the data", last_good)
