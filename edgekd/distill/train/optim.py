"""Optimisers, learning-rate schedules, max-norm and the parameters each stage trains."""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from edgekd.distill.train.device import Amp
from edgekd.distill.train.stage import Stage
from edgekd.errors import EdgekdError
from edgekd.recipe import TrainConfig


def make_optimizer(params: list[nn.Parameter], cfg: TrainConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov and cfg.momentum > 0,
                               weight_decay=cfg.weight_decay)  # fmt: skip
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    raise EdgekdError(f"train.optimizer={cfg.optimizer!r}: valid: sgd, adam, adamw")


def lr_factor(cfg: TrainConfig) -> Callable[[int], float]:
    """Per-epoch multiplier of the base LR (linear warm-up, then the schedule)."""

    def factor(epoch: int) -> float:
        if cfg.warmup_epochs and epoch < cfg.warmup_epochs:
            return (epoch + 1) / (cfg.warmup_epochs + 1)
        e = epoch - cfg.warmup_epochs
        n = max(1, cfg.epochs - cfg.warmup_epochs)
        if cfg.schedule == "cosine":
            return 0.5 * (1 + math.cos(math.pi * e / n))
        if cfg.schedule == "step":
            return cfg.gamma ** (e // max(1, cfg.step_size))
        if cfg.schedule == "multistep":
            return cfg.gamma ** sum(epoch >= m for m in cfg.milestones)
        return 1.0

    return factor


def stage_param_groups(stage: Stage, where: str) -> dict[str, list[nn.Parameter]]:
    """The stage's optimizer groups; with ``trainable`` only student parameters under that prefix train
    (plus what the stage's losses own, e.g. adapters)."""
    groups = stage.distiller.param_groups()
    if stage.trainable is None:
        return groups
    student = stage.distiller.student
    prefix = stage.trainable
    student_named = dict(student.named_parameters())
    keep = {id(p) for n, p in student_named.items() if n == prefix or n.startswith(prefix + ".")}
    student_ids = {id(p) for p in student_named.values()}
    out = {k: [p for p in ps if id(p) in keep or id(p) not in student_ids] for k, ps in groups.items()}
    if not any(id(p) in keep for ps in out.values() for p in ps):
        mods = [n for n, _ in student.named_modules() if n]
        near = ", ".join(difflib.get_close_matches(prefix, mods, n=5, cutoff=0.3) or mods[:5])
        raise EdgekdError(
            f"{where}: trainable {prefix!r} selects no student parameter; nearest module paths: {near}"
        )
    return out


def apply_max_norm(model: nn.Module, max_norm: float) -> None:
    """Rescale each row of every ``nn.Linear`` weight to an L2 norm of at most ``max_norm``."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Linear):
                norms = m.weight.norm(dim=1, keepdim=True).clamp(min=1e-12)
                m.weight.mul_(torch.clamp(max_norm / norms, max=1.0))


class StageOptimizers:
    """One optimizer and LR schedule per network the stage's distiller names in ``param_groups``."""

    def __init__(self, stage: Stage, where: str) -> None:
        groups = stage_param_groups(stage, where)
        self.cfg = stage.cfg
        self.student = stage.distiller.student
        self.opts = {name: make_optimizer(ps, self.cfg) for name, ps in groups.items() if ps}
        if not self.opts:
            raise EdgekdError(f"{where}: trains no parameter; check `trainable` and the losses")
        self.scheds = {
            name: torch.optim.lr_scheduler.LambdaLR(o, lr_factor(self.cfg)) for name, o in self.opts.items()
        }
        self.params = [p for ps in groups.values() for p in ps]

    def step(self, loss_for_grad: torch.Tensor, amp: Amp) -> None:
        """Zero the gradients, back-propagate, clip, step every optimizer, then apply max-norm."""
        for o in self.opts.values():
            o.zero_grad(set_to_none=True)
        amp.backward(loss_for_grad)
        if self.cfg.grad_clip > 0:
            amp.unscale(self.opts.values())
            torch.nn.utils.clip_grad_norm_(self.params, self.cfg.grad_clip)
        amp.step(self.opts.values())
        if self.cfg.max_norm > 0:
            apply_max_norm(self.student, self.cfg.max_norm)

    def epoch_done(self) -> None:
        for sc in self.scheds.values():
            sc.step()

    def lr(self, epoch: int) -> float:
        """The learning rate of ``epoch`` (as logged in the epoch's row)."""
        return self.cfg.lr * lr_factor(self.cfg)(epoch)

    def state(self) -> dict[str, Any]:
        return {
            "optimizers": {k: o.state_dict() for k, o in self.opts.items()},
            "schedulers": {k: s.state_dict() for k, s in self.scheds.items()},
        }
