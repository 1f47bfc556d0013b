"""The training checkpoint: written atomically after every epoch, read back for an exact ``--resume``.

It records the stage, the epoch inside it, every distiller's state (adapters included), every optimizer
and schedule and every RNG, so a resumed run continues bit-identically, also across a stage boundary.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from edgekd.atomic import atomic_torch_save
from edgekd.distill.train.optim import StageOptimizers
from edgekd.distill.train.stage import Stage
from edgekd.errors import EdgekdError
from edgekd.models.checkpoint import read_checkpoint
from edgekd.runfolder import RunFolder

CHECKPOINT_FORMAT = "edgekd-checkpoint/2"


@dataclass
class ResumePoint:
    """Where a run (re)starts: the stage, the epoch inside it, the rows so far and the optimizer states
    (None: the stage starts with fresh optimizers)."""

    stage: int = 0
    epoch: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    optimizer_states: dict[str, Any] | None = None
    loss_reference: list[float] = field(default_factory=list)


def cpu_state(module: nn.Module) -> dict[str, Any]:
    """``module``'s state dict with every tensor detached on the CPU."""
    return {k: (v.detach().cpu() if isinstance(v, Tensor) else v) for k, v in module.state_dict().items()}


class Checkpointer:
    """Saves and loads ``run.checkpoint`` for the ``stages`` of one run."""

    def __init__(self, run: RunFolder, stages: list[Stage], seed: int) -> None:
        self.run, self.stages, self.seed = run, stages, seed

    @property
    def path(self) -> Path:
        return self.run.checkpoint

    def save(self, stage: int, epoch: int, optimizers: StageOptimizers, gen: torch.Generator,
             history: list[dict[str, Any]], loss_reference: list[float]) -> None:  # fmt: skip
        atomic_torch_save(
            self.path,
            {
                "format": CHECKPOINT_FORMAT,
                "stage": stage,
                "epoch": epoch,  # inside the stage
                "global_epoch": len(history),
                "distillers": [cpu_state(st.distiller) for st in self.stages],
                **optimizers.state(),
                "generator": gen.get_state(),
                "torch_rng": torch.get_rng_state(),
                "history": history,
                "seed": self.seed,
                "loss_reference": list(loss_reference),
            },
        )

    def load(self, gen: torch.Generator) -> ResumePoint:
        """Restore the distillers, ``gen`` and torch's RNG from the checkpoint; where to continue."""
        ck = read_checkpoint(self.path, "training checkpoint")
        if ck.get("format") != CHECKPOINT_FORMAT:
            raise EdgekdError(
                f"{self.path}: not an edgekd training checkpoint of this version; use --overwrite to start over"
            )
        self._load_distillers(ck)
        try:
            gen.set_state(ck["generator"])
            torch.set_rng_state(ck["torch_rng"])
            stage, epoch, history = int(ck["stage"]), int(ck["epoch"]), list(ck["history"])
            opt_states = {"optimizers": dict(ck["optimizers"]), "schedulers": dict(ck["schedulers"])}
        except (KeyError, TypeError, ValueError, RuntimeError) as e:
            raise EdgekdError(
                f"{self.path}: incomplete training checkpoint ({type(e).__name__}: {e}); "
                "use --overwrite to start again"
            ) from None
        reference = [float(v) for v in ck.get("loss_reference", [])]
        closed_a_stage = stage + 1 < len(self.stages) and epoch >= self.stages[stage].cfg.epochs
        if closed_a_stage:  # the next stage starts fresh
            return ResumePoint(stage + 1, 0, history, None, reference)
        return ResumePoint(stage, epoch, history, opt_states, reference)

    def _load_distillers(self, ck: dict[str, Any]) -> None:
        try:
            states = ck["distillers"]
            if len(states) != len(self.stages):
                raise EdgekdError(
                    f"{self.path}: has {len(states)} stage(s), this recipe {len(self.stages)}; use --overwrite"
                )
            for st, state in zip(self.stages, states):
                st.distiller.load_state_dict(state)
        except RuntimeError as e:
            raise EdgekdError(
                f"{self.path}: does not match this recipe's model ({str(e).splitlines()[0]}); "
                "use a new run name or --overwrite"
            ) from None
        except (KeyError, TypeError, AttributeError):
            raise EdgekdError(
                f"{self.path}: incomplete training checkpoint (no model state); use --overwrite to start again"
            ) from None

    def restore_optimizers(self, optimizers: StageOptimizers, states: dict[str, Any]) -> None:
        try:
            for k, o in optimizers.opts.items():
                o.load_state_dict(states["optimizers"][k])
                optimizers.scheds[k].load_state_dict(states["schedulers"][k])
        except (KeyError, ValueError, RuntimeError) as e:
            raise EdgekdError(
                f"{self.path}: optimizer state does not match this recipe ({type(e).__name__}: {e}); "
                "use --overwrite"
            ) from None

    def restore_last_good(self) -> int | None:
        """Load the distillers of the last saved epoch; its global epoch number (None: no checkpoint)."""
        if not self.path.exists():
            return None
        ck = read_checkpoint(self.path)
        for st, state in zip(self.stages, ck["distillers"]):
            st.distiller.load_state_dict(state)
        return int(ck.get("global_epoch", ck["epoch"]))
