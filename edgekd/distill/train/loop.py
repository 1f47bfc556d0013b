"""The training loop shared by every method: ``fit`` -> stage -> epoch -> step.

Seeds, optimizer and LR schedule from the recipe, rich progress (epoch, loss terms, accuracy, ETA), an
atomic checkpoint after every epoch (:class:`Checkpointer`), exact resume (model, optimizer, scheduler and
every RNG state are restored), a stop with a clear message on a NaN/inf loss that keeps the last good
checkpoint (:class:`DivergenceGuard`), and the teacher-output cache (:class:`TeacherOutputs`).
"""

from __future__ import annotations

import inspect
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from edgekd.data import ArrayDataset
from edgekd.data.augment import Augmentation
from edgekd.distill import distributed
from edgekd.distill.cache import TeacherOutputs
from edgekd.distill.distributed import DistContext
from edgekd.distill.methods.base import Distiller
from edgekd.distill.qat import FakeQuantizer, range_epochs
from edgekd.distill.train.checkpoint import Checkpointer, ResumePoint
from edgekd.distill.train.device import Amp, memory_format, resolve_device, resolve_threads, seed_everything
from edgekd.distill.train.guard import DivergenceGuard
from edgekd.distill.train.optim import StageOptimizers
from edgekd.distill.train.progress import Progress
from edgekd.distill.train.stage import FitResult, Stage, TrainingInterrupted
from edgekd.errors import EdgekdError
from edgekd.metrics.evaluate import evaluate, hard_labels
from edgekd.recipe import TrainConfig
from edgekd.runfolder import RunFolder


@dataclass
class _Fit:
    """What every stage of one ``fit`` shares: the data as tensors, where it runs, the RNG, the rows."""

    train: ArrayDataset
    val: ArrayDataset | None
    test: ArrayDataset | None
    device: torch.device
    ctx: DistContext
    fmt: torch.memory_format
    gen: torch.Generator
    teacher: TeacherOutputs
    stop_after_epoch: int | None
    total_epochs: int
    x: Tensor = field(init=False)
    y: Tensor = field(init=False)
    extra: dict[str, Tensor] = field(init=False)
    history: list[dict[str, Any]] = field(default_factory=list)
    epoch: int = 0  # epochs done over all stages
    bar: Progress | None = None

    def __post_init__(self) -> None:
        self.x, self.y = torch.from_numpy(self.train.x), torch.from_numpy(self.train.y)
        self.extra = {k: torch.from_numpy(v) for k, v in self.train.extra.items()}

    @property
    def n(self) -> int:
        return len(self.y)


@dataclass
class _StageRun:
    """One stage being trained: its optimizers, precision, forward step and the teacher's stored outputs."""

    index: int
    stage: Stage
    optimizers: StageOptimizers
    amp: Amp
    forward: Callable[..., Any]
    teacher_out: Tensor | None
    pass_extra: bool
    steps: int
    quantizer: FakeQuantizer | None = None  # a QAT stage's int8 simulation (attached while it trains)

    @property
    def cfg(self) -> TrainConfig:
        return self.stage.cfg


class Trainer:
    """Runs the stages (or one distiller for ``cfg.epochs``), checkpointing into ``run`` after every epoch.

    Each stage keeps one optimizer and schedule per network the distiller names in ``param_groups`` (a
    scheme with two peers has two). The checkpoint records the stage, the epoch inside it, every
    distiller's state (adapters included), every optimizer and schedule and every RNG, so ``--resume``
    continues bit-identically, also across a stage boundary.
    """

    def __init__(
        self,
        distiller: Distiller | list[Stage],
        cfg: TrainConfig | None,
        run: RunFolder,
        *,
        seed: int = 0,
        jitter: int = 0,
        augmentation: Augmentation | None = None,
        teacher_views: int = 0,
        num_classes: int = 0,
        progress: bool = True,
        label: str = "train",
        task: str = "classification",
        cache_dir: str | Path | None = None,
        preprocessing: dict[str, Any] | None = None,
    ) -> None:
        if isinstance(distiller, list):
            self.stages = distiller
        else:
            assert cfg is not None
            self.stages = [Stage("train", distiller, cfg)]
        self.distiller = self.stages[-1].distiller
        self.cfg = self.stages[0].cfg
        self.run = run
        self.seed = seed
        if augmentation is None and jitter:  # the old keyword: a translation of +-jitter pixels
            augmentation = Augmentation.translation(jitter, seed)
        self.augment = augmentation if augmentation else None
        self.teacher_views = int(teacher_views) if self.augment else 0
        self.num_classes = int(num_classes)
        self.progress = progress
        self.label = label
        self.task = task
        self.cache_dir = cache_dir  # None: no teacher-output cache
        self.preprocessing = dict(preprocessing or {})
        self.speed: dict[str, Any] = {}  # what was used, recorded in the run folder (speed.json)
        self.checkpointer = Checkpointer(run, self.stages, seed)
        self.guard = DivergenceGuard(self.cfg.divergence_factor, label, self.checkpointer)

    def fit(
        self,
        train: ArrayDataset,
        val: ArrayDataset | None = None,
        test: ArrayDataset | None = None,
        *,
        resume: bool = False,
        stop_after_epoch: int | None = None,
    ) -> FitResult:
        f = self._setup(train, val, test, stop_after_epoch)
        start = self._start(f, resume)
        f.history = start.history
        f.epoch = sum(st.cfg.epochs for st in self.stages[: start.stage]) + start.epoch
        steps = max(1, math.ceil(f.n / self.cfg.batch_size))
        f.bar = Progress(self.label, f.total_epochs, steps, f.epoch, enabled=self.progress and f.ctx.is_main)
        with f.bar:
            for k in range(start.stage, len(self.stages)):
                at_start = k == start.stage
                first, states = (start.epoch, start.optimizer_states) if at_start else (0, None)
                self._fit_stage(f, k, first, states)
        return self._finish(f)

    # --- fit: set up, resume, finish ---------------------------------------------------------------
    def _setup(self, train: ArrayDataset, val: ArrayDataset | None, test: ArrayDataset | None,
               stop_after_epoch: int | None) -> _Fit:  # fmt: skip
        """Threads, device, seeds and memory format; the networks moved to the device."""
        threads = resolve_threads(self.cfg.threads)
        torch.set_num_threads(threads)
        device = resolve_device(self.cfg.device)
        ctx = distributed.current()
        for k, st in enumerate(self.stages):
            distributed.check_batch(st.cfg.batch_size, ctx.world_size,
                                    f"stages[{k}].train.batch_size" if len(self.stages) > 1 else "train.batch_size")  # fmt: skip
        if ctx.enabled and device.type == "cuda":
            device = torch.device("cuda", ctx.local_rank)
        self.speed = {"threads": threads, "device": str(device), "amp": self.cfg.amp if device.type == "cuda" else "off",
                      "world_size": ctx.world_size, "backend": ctx.describe(),
                      "batches": "sliced from in-memory tensors"}  # fmt: skip
        seed_everything(self.seed)
        gen = torch.Generator().manual_seed(self.seed)
        fmt = memory_format(self.cfg, torch.from_numpy(train.x), [st.distiller for st in self.stages])
        for st in self.stages:
            st.distiller.to(device, memory_format=fmt)
        self.speed["channels_last"] = fmt is torch.channels_last
        teacher = TeacherOutputs(self.cache_dir, self.preprocessing, self.augment, self.teacher_views,
                                 self.num_classes, self.speed)  # fmt: skip
        total = sum(st.cfg.epochs for st in self.stages)
        return _Fit(train, val, test, device, ctx, fmt, gen, teacher, stop_after_epoch, total)

    def _start(self, f: _Fit, resume: bool) -> ResumePoint:
        """Where training starts: the checkpoint's stage and epoch (``resume``), else the beginning."""
        if resume and self.run.checkpoint.exists():
            point = self.checkpointer.load(f.gen)
            self.guard.reference = point.loss_reference
            return point
        if resume:
            raise EdgekdError(f"{self.run.checkpoint}: nothing to resume; run without --resume")
        return ResumePoint()

    def _finish(self, f: _Fit) -> FitResult:
        """The methods' end-of-training hook, the final test figures, the networks back on the CPU."""
        self.distiller.on_train_end(f.x.to(f.device))
        final: dict[str, Any] = {}
        if f.test is not None and f.ctx.is_main:
            final = self._scores("test", self.distiller.student, f.test, f.device)
        for st in self.stages:
            st.distiller.to("cpu", memory_format=torch.contiguous_format)
        last = self.stages[-1]
        qat = last.quantizer.record() if last.cfg.qat and last.quantizer is not None else None
        return FitResult(f.history, final, qat)

    # --- stage ---------------------------------------------------------------------------------------
    def _fit_stage(self, f: _Fit, k: int, first: int, optimizer_states: dict[str, Any] | None) -> None:
        s = self._begin_stage(f, k, optimizer_states)
        try:
            for epoch in range(first, s.cfg.epochs):
                row = self._epoch(f, s, epoch)
                self._end_epoch(f, s, epoch, row)
        finally:
            if s.quantizer is not None:
                s.quantizer.detach()

    def _begin_stage(self, f: _Fit, k: int, optimizer_states: dict[str, Any] | None) -> _StageRun:
        stage = self.stages[k]
        optimizers = StageOptimizers(stage, f"stages[{k}]" if len(self.stages) > 1 else "train")
        if optimizer_states is not None:
            self.checkpointer.restore_optimizers(optimizers, optimizer_states)
        amp = Amp(stage.cfg.amp, f.device)
        distiller = self.distiller = stage.distiller
        teacher_out = f.teacher.for_stage(distiller, f.train, f.device, amp.autocast, f.ctx)
        forward = distributed.wrap(distiller, f.device, f.ctx)
        pass_extra = bool(f.extra) and _accepts(distiller.forward_train, "extra")  # once, not per step
        steps = max(1, math.ceil(f.n / stage.cfg.batch_size))
        quantizer = stage.quantizer if stage.cfg.qat else None
        if quantizer is not None:
            quantizer.attach(distiller.student)
        return _StageRun(k, stage, optimizers, amp, forward, teacher_out, pass_extra, steps, quantizer)

    # --- epoch ---------------------------------------------------------------------------------------
    def _epoch(self, f: _Fit, s: _StageRun, epoch: int) -> dict[str, Any]:
        """One pass over the seeded permutation of the training set; the epoch's row."""
        distiller, batch_size = s.stage.distiller, s.cfg.batch_size
        distiller.train()
        if s.quantizer is not None:  # ranges observed first, then fixed with batch norm frozen
            s.quantizer.observing = epoch < range_epochs(s.cfg.epochs, s.cfg.qat_range_epochs)
            if not s.quantizer.observing:
                s.quantizer.freeze(distiller.student)
        distiller.on_epoch_start(epoch, s.cfg.epochs)
        t0 = time.perf_counter()
        perm = torch.randperm(f.n, generator=f.gen)
        sums: dict[str, float] = {}
        correct = 0
        for step in range(s.steps):
            idx = perm[step * batch_size : (step + 1) * batch_size]
            if f.ctx.enabled and len(idx) < f.ctx.world_size:
                continue  # a last batch smaller than the world: skipped on every rank
            correct += self._step(f, s, idx, step, sums)
            f.bar.step({key: v / ((step + 1) * batch_size) for key, v in sums.items()})
        s.optimizers.epoch_done()
        f.epoch += 1
        return self._epoch_row(f, s, epoch, sums, correct, time.perf_counter() - t0)

    def _epoch_row(self, f: _Fit, s: _StageRun, epoch: int, sums: dict[str, float], correct: int,
                   seconds: float) -> dict[str, Any]:  # fmt: skip
        row: dict[str, Any] = {"epoch": f.epoch, "lr": s.optimizers.lr(epoch), "seconds": round(seconds, 3)}
        if len(self.stages) > 1:
            row.update({"stage": s.index + 1, "stage_name": s.stage.name, "stage_epoch": epoch + 1})
        row.update({f"train_{key}": v / f.n for key, v in sums.items()})
        if self.task == "classification":
            row["train_accuracy"] = correct / f.n
        student = s.optimizers.student
        if f.val is not None and len(f.val) and f.ctx.is_main:
            row.update(self._scores("val", student, f.val, f.device))
        if f.test is not None and s.cfg.eval_test_each_epoch and f.ctx.is_main:
            row.update(self._scores("test", student, f.test, f.device))
        return row

    def _end_epoch(self, f: _Fit, s: _StageRun, epoch: int, row: dict[str, Any]) -> None:
        """Check the weights, record the row, checkpoint, and stop here when asked."""
        self.guard.check_weights(s.stage.distiller, f.epoch)
        f.history.append(row)
        if f.ctx.is_main:
            self.checkpointer.save(s.index, epoch + 1, s.optimizers, f.gen, f.history, self.guard.reference)
        f.ctx.barrier()
        f.bar.epoch_done(row)
        if f.stop_after_epoch is not None and f.stop_after_epoch <= f.epoch < f.total_epochs:
            raise TrainingInterrupted(f"stopped after epoch {f.epoch}")

    def _scores(self, prefix: str, model: torch.nn.Module, data: ArrayDataset, device: torch.device) -> dict:
        return {f"{prefix}_{k}": v for k, v in evaluate(model, data, task=self.task, device=device).items()}

    # --- step ----------------------------------------------------------------------------------------
    def _step(self, f: _Fit, s: _StageRun, idx: Tensor, step: int, sums: dict[str, float]) -> int:
        """One optimisation step on the global batch ``idx`` (this rank's rows of it); its correct count."""
        n_global = len(idx)
        xb, yb, views = self._batch(f.x, f.y, idx, f.epoch)  # the global batch
        xb = xb.contiguous(memory_format=f.fmt)
        rows = distributed.local_rows(n_global, f.ctx)
        idx, xb, yb, views = idx[rows], xb[rows], yb[rows], views[rows]
        xb, yb = xb.to(f.device, non_blocking=True), yb.to(f.device, non_blocking=True)
        kw = self._step_inputs(f, s, idx, views)
        with s.amp.autocast():
            logits, terms = s.forward(xb, yb, **kw)
        loss, terms, loss_for_grad, n_correct = self._step_loss(f, logits, terms, yb, len(idx), n_global)
        self.guard.check_loss(loss, terms, f.epoch, step)
        s.optimizers.step(loss_for_grad, s.amp)
        for key, v in terms.items():
            sums[key] = sums.get(key, 0.0) + float(v.detach()) * n_global
        sums["loss"] = sums.get("loss", 0.0) + float(loss.detach()) * n_global
        return n_correct

    def _batch(self, x_all: Tensor, y_all: Tensor, idx: Tensor, epoch: int) -> tuple[Tensor, Tensor, Tensor]:
        """Inputs, labels and view numbers of the examples ``idx`` in ``epoch``: the raw examples, or the
        augmented view each example shows this epoch."""
        if self.augment is None:
            return x_all[idx], y_all[idx], torch.zeros(len(idx), dtype=torch.long)
        return self.augment.batch(x_all, y_all, idx, epoch, self.teacher_views, self.num_classes)

    def _step_inputs(self, f: _Fit, s: _StageRun, idx: Tensor, views: Tensor) -> dict[str, Any]:
        """The keywords of ``forward_train`` beyond the batch: privileged inputs and stored teacher outputs."""
        kw: dict[str, Any] = {}
        if s.pass_extra:
            kw["extra"] = {key: v[idx].to(f.device) for key, v in f.extra.items()}
        if s.teacher_out is not None:
            kw["teacher_out"] = f.teacher.batch(s.teacher_out, idx, views)
        return kw

    def _step_loss(self, f: _Fit, logits: Tensor, terms: dict[str, Tensor], yb: Tensor, n_local: int,
                   n_global: int) -> tuple[Tensor, dict[str, Tensor], Tensor, int]:  # fmt: skip
        """The logged loss and terms (over the global batch), the loss to back-propagate, the correct count."""
        loss = sum(terms.values())
        if f.ctx.enabled:  # DDP averages gradients over ranks: weigh by the local share
            loss_for_grad = loss * (n_local * f.ctx.world_size / n_global)
            loss, terms, n_correct = distributed.reduce_step(loss, terms, logits, hard_labels(yb), n_local,
                                                             n_global, f.ctx, self.task)  # fmt: skip
            return loss, terms, loss_for_grad, n_correct
        n_correct = int((logits.argmax(1) == hard_labels(yb)).sum()) if self.task == "classification" else 0
        return loss, terms, loss, n_correct


def _accepts(fn: Callable[..., Any], name: str) -> bool:
    """Whether ``fn`` takes the keyword ``name`` (privileged inputs go only to methods that read them)."""
    params = inspect.signature(fn).parameters
    return name in params or any(p.kind == p.VAR_KEYWORD for p in params.values())
