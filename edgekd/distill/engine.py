"""The training loop shared by every method.

Seeds, optimizer and LR schedule from the recipe, rich progress (epoch, loss terms, accuracy, ETA),
``metrics.json`` and ``curves.png`` in the run folder, an atomic checkpoint after every epoch, exact
resume (model, optimizer, scheduler and every RNG state are restored), and a stop with a clear message
on a NaN/inf loss that keeps the last good checkpoint.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from edgekd.atomic import atomic_torch_save, atomic_write_json
from edgekd.data import ArrayDataset
from edgekd.data.augment import Augmentation, AugmentSpec
from edgekd.distill.methods.base import Distiller
from edgekd.errors import EdgekdError
from edgekd.recipe import TrainConfig
from edgekd.runfolder import RunFolder

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "edgekd-checkpoint/2"


class TrainingInterrupted(Exception):
    """Raised by ``stop_after_epoch`` (tests, time limits): the checkpoint of the last epoch is on disk."""


class TrainingDiverged(EdgekdError):
    """The loss became NaN/inf or exploded, or a parameter/buffer became non-finite.

    When a good epoch exists, the distiller has been restored to it (``last_good_epoch``) before raising.
    """

    def __init__(self, message: str, last_good_epoch: int | None) -> None:
        super().__init__(message)
        self.last_good_epoch = last_good_epoch


REFERENCE_STEPS = 10  # steps whose mean loss is the reference of the explosion rule


def non_finite_tensors(module: nn.Module) -> list[str]:
    """Names of parameters and buffers (e.g. batch-norm statistics) holding NaN or inf."""
    bad = [n for n, p in module.named_parameters() if not torch.isfinite(p).all()]
    bad += [n for n, b in module.named_buffers() if b.is_floating_point() and not torch.isfinite(b).all()]
    return bad


@dataclass
class FitResult:
    history: list[dict[str, Any]] = field(default_factory=list)
    final: dict[str, Any] = field(default_factory=dict)


def seed_everything(seed: int) -> None:
    import random

    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def resolve_threads(requested: int = 0) -> int:
    """Intra-op threads: ``requested`` if > 0, else ``$EDGEKD_THREADS``, else all cores unless the machine
    is already busy (load average above 75% of the cores), where one thread avoids OpenMP thrashing that
    was measured at 25x slower per step for a small CNN on a loaded 2-core machine."""
    import os

    if requested > 0:
        return requested
    if os.environ.get("EDGEKD_THREADS"):
        return max(1, int(os.environ["EDGEKD_THREADS"]))
    cores = os.cpu_count() or 1
    try:
        busy = os.getloadavg()[0] > 0.75 * cores
    except OSError:
        busy = False
    return 1 if busy else cores


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


def _hard(y: Tensor) -> Tensor:
    """Class labels of a batch: mixed label distributions (mixup, cutmix) count as their arg-max."""
    return y.argmax(1) if y.dim() == 2 else y


@torch.no_grad()
def evaluate(
    model: nn.Module, data: ArrayDataset, batch_size: int = 1024, task: str = "classification",
    device: torch.device | str = "cpu",
) -> dict[str, float]:  # fmt: skip
    """Classification: top-1 accuracy, error count and mean CE. Reconstruction: mean reconstruction error
    (the per-sample anomaly score) and, when the labels hold both normal (0) and anomalous (1) samples, the
    ROC AUC of that score."""
    if len(data) == 0:
        return {}
    was_training = model.training
    model.eval()
    n = len(data)
    if task == "reconstruction":
        from edgekd.distill.losses import reconstruction_error

        scores = []
        for i in range(0, n, batch_size):
            xb = torch.from_numpy(data.x[i : i + batch_size]).to(device)
            scores.append(reconstruction_error(model(xb).float(), xb).cpu())
        model.train(was_training)
        score = torch.cat(scores).numpy()
        out = {"recon_error": float(score.mean()), "loss": float(score.mean())}
        labels = np.asarray(data.y)
        if set(np.unique(labels)) == {0, 1}:
            from edgekd.metrics.anomaly import roc_auc

            out["auc"] = roc_auc(score, labels)
        return out
    correct, loss = 0, 0.0
    for i in range(0, n, batch_size):
        xb = torch.from_numpy(data.x[i : i + batch_size]).to(device)
        yb = torch.from_numpy(data.y[i : i + batch_size]).to(device)
        logits = model(xb).float()
        loss += float(torch.nn.functional.cross_entropy(logits, yb, reduction="sum"))
        correct += int((logits.argmax(1) == yb).sum())
    model.train(was_training)
    return {"accuracy": correct / n, "errors": n - correct, "loss": loss / n}


def resolve_device(requested: str) -> torch.device:
    """``auto`` picks CUDA, then MPS, then the CPU; asking for a device that is absent is an error."""
    cuda = torch.cuda.is_available()
    mps = bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())
    if requested == "auto":
        return torch.device("cuda" if cuda else "mps" if mps else "cpu")
    if requested == "cuda" and not cuda:
        raise EdgekdError("train.device=cuda: no CUDA GPU is visible to torch here; use device: auto or cpu")
    if requested == "mps" and not mps:
        raise EdgekdError("train.device=mps: no Apple GPU (MPS) is available here; use device: auto or cpu")
    return torch.device(requested)


@dataclass
class Stage:
    """One stage of a run: a distiller (sharing the student with the other stages), its own training
    settings, and which student parameters train (a module-path prefix, or all)."""

    name: str
    distiller: Distiller
    cfg: TrainConfig
    trainable: str | None = None


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
        import difflib

        mods = [n for n, _ in student.named_modules() if n]
        near = ", ".join(difflib.get_close_matches(prefix, mods, n=5, cutoff=0.3) or mods[:5])
        raise EdgekdError(
            f"{where}: trainable {prefix!r} selects no student parameter; nearest module paths: {near}"
        )
    return out


def _apply_max_norm(model: nn.Module, max_norm: float) -> None:
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Linear):
                norms = m.weight.norm(dim=1, keepdim=True).clamp(min=1e-12)
                m.weight.mul_(torch.clamp(max_norm / norms, max=1.0))


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
            augmentation = Augmentation([AugmentSpec("translate", {"max_shift": int(jitter)})], seed)
        self.augment = augmentation if augmentation else None
        self.teacher_views = int(teacher_views) if self.augment else 0
        self.num_classes = int(num_classes)
        self.progress = progress
        self.label = label
        self.task = task
        self.loss_reference: list[float] = []
        self.cache_dir = cache_dir  # None: no teacher-output cache
        self.preprocessing = dict(preprocessing or {})
        self.speed: dict[str, Any] = {}  # what was used, recorded in the run folder (speed.json)

    def fit(
        self,
        train: ArrayDataset,
        val: ArrayDataset | None = None,
        test: ArrayDataset | None = None,
        *,
        resume: bool = False,
        stop_after_epoch: int | None = None,
    ) -> FitResult:
        from edgekd.distill import distributed

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
                      "world_size": ctx.world_size, "backend": _backend(ctx),
                      "batches": "sliced from in-memory tensors"}  # fmt: skip
        seed_everything(self.seed)
        gen = torch.Generator().manual_seed(self.seed)
        x_all = torch.from_numpy(train.x)
        fmt = memory_format(self.cfg, x_all, [st.distiller for st in self.stages])
        for st in self.stages:
            st.distiller.to(device, memory_format=fmt)
        self.speed["channels_last"] = fmt is torch.channels_last
        history: list[dict[str, Any]] = []
        start_stage, start_epoch, opt_states = 0, 0, None
        progress = self.progress and ctx.is_main
        if resume and self.run.checkpoint.exists():
            start_stage, start_epoch, history, opt_states = self._load_checkpoint(gen)
        elif resume:
            raise EdgekdError(f"{self.run.checkpoint}: nothing to resume; run without --resume")

        y_all = torch.from_numpy(train.y)
        extra_all = {k: torch.from_numpy(v) for k, v in train.extra.items()}
        n = len(y_all)
        total_epochs = sum(st.cfg.epochs for st in self.stages)
        done_before = sum(st.cfg.epochs for st in self.stages[:start_stage]) + start_epoch
        bar = _Progress(self.label, total_epochs, max(1, math.ceil(n / self.cfg.batch_size)), done_before,
                        enabled=progress)  # fmt: skip
        cached: dict[int, Tensor | None] = {}  # id(teacher) -> its outputs on the training set
        epoch_global = done_before
        with bar:
            for k in range(start_stage, len(self.stages)):
                stage = self.stages[k]
                cfg = stage.cfg
                where = f"stages[{k}]" if len(self.stages) > 1 else "train"
                groups = stage_param_groups(stage, where)
                opts = {name: make_optimizer(ps, cfg) for name, ps in groups.items() if ps}
                if not opts:
                    raise EdgekdError(f"{where}: trains no parameter; check `trainable` and the losses")
                scheds = {
                    name: torch.optim.lr_scheduler.LambdaLR(o, lr_factor(cfg)) for name, o in opts.items()
                }
                first = start_epoch if k == start_stage else 0
                if k == start_stage and opt_states is not None:
                    self._restore_optimizers(opts, scheds, opt_states)
                amp = _Amp(cfg.amp, device)
                distiller = stage.distiller
                self.distiller = distiller
                t_cache = self._teacher_cache(distiller, train, device, amp, ctx, cached)
                forward_train = distributed.wrap(distiller, device, ctx)
                pass_extra = bool(extra_all) and _accepts(
                    distiller.forward_train, "extra"
                )  # once, not per step
                steps = max(1, math.ceil(n / cfg.batch_size))
                student = distiller.student
                params = [p for ps in groups.values() for p in ps]
                for epoch in range(first, cfg.epochs):
                    distiller.train()
                    distiller.on_epoch_start(epoch, cfg.epochs)
                    t0 = time.perf_counter()
                    perm = torch.randperm(n, generator=gen)
                    sums: dict[str, float] = {}
                    correct = 0
                    for step in range(steps):
                        idx = perm[step * cfg.batch_size : (step + 1) * cfg.batch_size]
                        n_global = len(idx)
                        if ctx.enabled and n_global < ctx.world_size:
                            continue  # a last batch smaller than the world: skipped on every rank
                        xb, yb, views = self._batch(x_all, y_all, idx, epoch_global)  # the global batch
                        xb = xb.contiguous(memory_format=fmt)
                        rows = distributed.local_rows(n_global, ctx)
                        idx, xb, yb, views = idx[rows], xb[rows], yb[rows], views[rows]
                        xb, yb = xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)
                        kw: dict[str, Any] = {}
                        if pass_extra:
                            kw["extra"] = {key: v[idx].to(device) for key, v in extra_all.items()}
                        if t_cache is not None:
                            kw["teacher_out"] = (t_cache[idx] if t_cache.dim() == 2 or self.augment is None
                                                 else t_cache[views.to(t_cache.device), idx]).float()  # fmt: skip
                        with amp.autocast():
                            logits, terms = forward_train(xb, yb, **kw)
                        loss = sum(terms.values())
                        n_local = len(idx)
                        if ctx.enabled:  # DDP averages gradients over ranks: weigh by the local share
                            loss_for_grad = loss * (n_local * ctx.world_size / n_global)
                            loss, terms, n_correct = _reduce_step(loss, terms, logits, _hard(yb), n_local,
                                                                  n_global, ctx, self.task)  # fmt: skip
                        else:
                            loss_for_grad = loss
                            n_correct = (
                                int((logits.argmax(1) == _hard(yb)).sum())
                                if self.task == "classification"
                                else 0
                            )
                        self._check_loss(loss, terms, epoch_global, step)
                        for o in opts.values():
                            o.zero_grad(set_to_none=True)
                        amp.backward(loss_for_grad)
                        if cfg.grad_clip > 0:
                            amp.unscale(opts.values())
                            torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
                        amp.step(opts.values())
                        if cfg.max_norm > 0:
                            _apply_max_norm(student, cfg.max_norm)
                        for key, v in terms.items():
                            sums[key] = sums.get(key, 0.0) + float(v.detach()) * n_global
                        sums["loss"] = sums.get("loss", 0.0) + float(loss.detach()) * n_global
                        correct += n_correct
                        bar.step({key: v / ((step + 1) * cfg.batch_size) for key, v in sums.items()})
                    for sc in scheds.values():
                        sc.step()
                    epoch_global += 1
                    row: dict[str, Any] = {"epoch": epoch_global, "lr": cfg.lr * lr_factor(cfg)(epoch),
                                           "seconds": round(time.perf_counter() - t0, 3)}  # fmt: skip
                    if len(self.stages) > 1:
                        row.update({"stage": k + 1, "stage_name": stage.name, "stage_epoch": epoch + 1})
                    row.update({f"train_{key}": v / n for key, v in sums.items()})
                    if self.task == "classification":
                        row["train_accuracy"] = correct / n
                    if val is not None and len(val) and ctx.is_main:
                        row.update(
                            {
                                f"val_{key}": v
                                for key, v in evaluate(student, val, task=self.task, device=device).items()
                            }
                        )
                    if test is not None and cfg.eval_test_each_epoch and ctx.is_main:
                        row.update(
                            {
                                f"test_{key}": v
                                for key, v in evaluate(student, test, task=self.task, device=device).items()
                            }
                        )
                    bad = non_finite_tensors(distiller)
                    if bad:
                        self._diverged(f"{len(bad)} parameter(s)/buffer(s) became non-finite in epoch {epoch_global} "
                                       f"(first: {bad[0]!r}) although the loss stayed finite")  # fmt: skip
                    history.append(row)
                    if ctx.is_main:
                        self._save_checkpoint(k, epoch + 1, opts, scheds, gen, history)
                    ctx.barrier()
                    bar.epoch_done(row)
                    if (
                        stop_after_epoch is not None
                        and epoch_global >= stop_after_epoch
                        and epoch_global < total_epochs
                    ):
                        raise TrainingInterrupted(f"stopped after epoch {epoch_global}")
        self.distiller.on_train_end(x_all.to(device))
        final: dict[str, Any] = {}
        if test is not None and ctx.is_main:
            final = {
                f"test_{key}": v
                for key, v in evaluate(self.distiller.student, test, task=self.task, device=device).items()
            }
        for st in self.stages:
            st.distiller.to("cpu", memory_format=torch.contiguous_format)
        return FitResult(history, final)

    # --- batches and the teacher-output cache --------------------------------------------------------
    def _batch(self, x_all: Tensor, y_all: Tensor, idx: Tensor, epoch: int) -> tuple[Tensor, Tensor, Tensor]:
        """Inputs, labels and view numbers of the examples ``idx`` in ``epoch``: the raw examples, or the
        augmented view each example shows this epoch (a fresh one, or one of the K cached views)."""
        if self.augment is None:
            return x_all[idx], y_all[idx], torch.zeros(len(idx), dtype=torch.long)
        views = self.augment.pick_views(epoch, idx.numpy(), self.teacher_views)
        xb, yb = self.augment.apply(x_all, y_all, idx.numpy(), views, self.num_classes)
        return xb, yb, torch.from_numpy(views)

    def _teacher_cache(self, distiller: Distiller, train: ArrayDataset, device: torch.device, amp: _Amp,
                       ctx: Any, cached: dict[int, Tensor | None]) -> Tensor | None:  # fmt: skip
        """The teacher's stored outputs (on ``device``), or None when the teacher runs on every step.

        Without augmentation: its outputs on every training example ``(N, ...)``. With augmentation and
        ``train.teacher_views = K``: its outputs on K views of every example ``(K, N, ...)`` in fp16, the
        student then draws one of those views each epoch. The teacher always scores the student's view."""
        teacher = getattr(distiller, "teacher", None)
        if teacher is None:
            return None
        t_in = getattr(distiller, "teacher_input", "x")
        views = self.teacher_views if t_in == "x" else 0
        if self.augment is not None:
            self.speed["teaching"] = ("consistent: the teacher scores the student's augmented view" if t_in == "x"
                                      else f"the teacher reads the unaugmented privileged input {t_in!r}")  # fmt: skip
            self.speed["augment"] = self.augment.describe()
            self.speed["teacher_views"] = views or "online (every view is new)"
        why_not = None
        if self.cache_dir is None:
            why_not = "train.cache_teacher is off"
        elif self.augment is not None and t_in == "x" and not views:
            why_not = (
                "data.augment shows new views every epoch (train.teacher_views: 0): the teacher runs online"
            )
        elif not distiller.cacheable_teacher():
            why_not = (
                f"method {type(distiller).__name__} runs the teacher itself (teacher features, input "
                "gradients, or no cached-output support)"
            )
        if why_not:
            self.speed["teacher_cache"] = f"off: {why_not}"
            log.info("teacher-output cache off: %s", why_not)
            return None
        if id(teacher) in cached:
            return cached[id(teacher)]
        from edgekd.distill.cache import TeacherCache, make_key

        t_x = train.x if t_in == "x" else train.extra[t_in]
        prep = {**self.preprocessing, "teacher_input": t_in, "device": device.type,
                "amp": self.speed.get("amp", "off")}  # fmt: skip
        if views:
            prep.update(
                {"augment": self.augment.describe(), "augment_seed": self.augment.seed, "views": views}
            )
        cache = TeacherCache(self.cache_dir, make_key(teacher, t_x, prep))
        t0 = time.perf_counter()
        compute = lambda: self._teacher_outputs(distiller, t_x, train.y, views, device, amp)  # noqa: E731
        out = cache.get(compute, write=ctx.is_main) if ctx.is_main else None
        ctx.barrier()  # rank 0 has written it: the others read it (or compute it without writing)
        if not ctx.is_main:
            out = cache.get(compute, write=False)
        if out.shape[int(bool(views))] != len(train) or (views and out.shape[0] != views):
            raise EdgekdError(f"{cache.path}: holds outputs of shape {tuple(out.shape)} for {len(train)} "
                              f"training samples and {views or 1} view(s); delete it")  # fmt: skip
        self.speed["teacher_cache"] = {**cache.record(), "seconds": round(time.perf_counter() - t0, 3)}
        cached[id(teacher)] = out.to(device)
        return cached[id(teacher)]

    def _teacher_outputs(self, distiller: Distiller, t_x: np.ndarray, y: np.ndarray, views: int,
                         device: torch.device, amp: _Amp) -> Tensor:  # fmt: skip
        """The teacher (in eval mode) on every example: ``(N, ...)``, or on K views of each ``(K, N, ...)``
        in fp16."""
        from edgekd.distill.cache import compute_outputs

        teacher = distiller.teacher
        was = teacher.training
        teacher.eval()
        x_all = torch.from_numpy(t_x)
        try:
            if not views:
                return compute_outputs(distiller.teacher_outputs, x_all, device, autocast=amp.autocast)
            y_all, n, chunk = torch.from_numpy(y), len(x_all), 4096
            out = []
            for v in range(views):
                parts = []
                for i in range(0, n, chunk):
                    idx = np.arange(i, min(n, i + chunk))
                    xv, _ = self.augment.apply(x_all, y_all, idx, np.full(len(idx), v), self.num_classes)
                    parts.append(
                        compute_outputs(distiller.teacher_outputs, xv, device, autocast=amp.autocast)
                    )
                out.append(torch.cat(parts).half())
            return torch.stack(out)
        finally:
            teacher.train(was)

    # --- divergence ------------------------------------------------------------------------------
    def _check_loss(self, loss: Tensor, terms: dict[str, Tensor], epoch: int, step: int) -> None:
        """NaN/inf, or (after the first REFERENCE_STEPS steps) above divergence_factor x their mean loss."""
        value = float(loss.detach())
        where = f"at epoch {epoch + 1} step {step + 1}"
        if not math.isfinite(value):
            bad = [k for k, v in terms.items() if not torch.isfinite(v)] or ["total"]
            self._diverged(f"loss term {bad[0]!r} became {value} {where}")
        ref = self.loss_reference
        if len(ref) < REFERENCE_STEPS:
            ref.append(value)
            return
        factor = self.cfg.divergence_factor
        limit = factor * max(sum(ref) / len(ref), 1e-3)
        if factor > 0 and value > limit:
            worst = max(terms, key=lambda k: float(terms[k].detach())) if terms else "total"
            self._diverged(
                f"loss exploded to {value:.3g} {where} (term {worst!r}; the rule: above train.divergence_factor="
                f"{factor:g} x {limit / factor:.3g}, the mean of the first {REFERENCE_STEPS} steps)"
            )

    def _diverged(self, what: str) -> None:
        """Restore the last good epoch (if any) and raise TrainingDiverged."""
        last_good = None
        if self.run.checkpoint.exists():
            from edgekd.models.checkpoint import read_checkpoint

            ck = read_checkpoint(self.run.checkpoint)
            for st, state in zip(self.stages, ck["distillers"]):
                st.distiller.load_state_dict(state)
            last_good = int(ck.get("global_epoch", ck["epoch"]))
        kept = (
            f"last good checkpoint kept ({self.run.checkpoint}, epoch {last_good})"
            if last_good
            else "no good epoch yet"
        )
        raise TrainingDiverged(f"{self.label}: {what}; {kept}; lower train.lr or check the data", last_good)

    # --- checkpoints -----------------------------------------------------------------------------
    def _save_checkpoint(self, stage: int, epoch: int, opts: dict, scheds: dict, gen: torch.Generator,
                         history: list) -> None:  # fmt: skip
        atomic_torch_save(
            self.run.checkpoint,
            {
                "format": CHECKPOINT_FORMAT,
                "stage": stage,
                "epoch": epoch,  # inside the stage
                "global_epoch": len(history),
                "distillers": [_cpu_state(st.distiller) for st in self.stages],
                "optimizers": {k: o.state_dict() for k, o in opts.items()},
                "schedulers": {k: s.state_dict() for k, s in scheds.items()},
                "generator": gen.get_state(),
                "torch_rng": torch.get_rng_state(),
                "history": history,
                "seed": self.seed,
                "loss_reference": list(self.loss_reference),
            },
        )

    def _load_checkpoint(self, gen: torch.Generator) -> tuple[int, int, list, dict]:
        from edgekd.models.checkpoint import read_checkpoint

        ck = read_checkpoint(self.run.checkpoint, "training checkpoint")
        if ck.get("format") != CHECKPOINT_FORMAT:
            raise EdgekdError(
                f"{self.run.checkpoint}: not an edgekd training checkpoint of this version; use --overwrite to start over"
            )
        try:
            states = ck["distillers"]
            if len(states) != len(self.stages):
                raise EdgekdError(
                    f"{self.run.checkpoint}: has {len(states)} stage(s), this recipe {len(self.stages)}; use --overwrite"
                )
            for st, state in zip(self.stages, states):
                st.distiller.load_state_dict(state)
        except RuntimeError as e:
            raise EdgekdError(
                f"{self.run.checkpoint}: does not match this recipe's model ({str(e).splitlines()[0]}); "
                "use a new run name or --overwrite"
            ) from None
        except (KeyError, TypeError, AttributeError):
            raise EdgekdError(
                f"{self.run.checkpoint}: incomplete training checkpoint (no model state); use --overwrite to start again"
            ) from None
        try:
            gen.set_state(ck["generator"])
            torch.set_rng_state(ck["torch_rng"])
            stage, epoch, history = int(ck["stage"]), int(ck["epoch"]), list(ck["history"])
            opt_states = {"optimizers": dict(ck["optimizers"]), "schedulers": dict(ck["schedulers"])}
        except (KeyError, TypeError, ValueError, RuntimeError) as e:
            raise EdgekdError(
                f"{self.run.checkpoint}: incomplete training checkpoint ({type(e).__name__}: {e}); "
                "use --overwrite to start again"
            ) from None
        self.loss_reference = [float(v) for v in ck.get("loss_reference", [])]
        if (
            stage < len(self.stages)
            and epoch >= self.stages[stage].cfg.epochs
            and stage + 1 < len(self.stages)
        ):
            return stage + 1, 0, history, None  # the checkpoint closed a stage: the next one starts fresh
        return stage, epoch, history, opt_states

    def _restore_optimizers(self, opts: dict, scheds: dict, states: dict) -> None:
        try:
            for k, o in opts.items():
                o.load_state_dict(states["optimizers"][k])
                scheds[k].load_state_dict(states["schedulers"][k])
        except (KeyError, ValueError, RuntimeError) as e:
            raise EdgekdError(
                f"{self.run.checkpoint}: optimizer state does not match this recipe ({type(e).__name__}: {e}); "
                "use --overwrite"
            ) from None


def memory_format(cfg: TrainConfig, x: Tensor, distillers: list[Distiller]) -> torch.memory_format:
    """``channels_last`` for image batches (N, C, H, W) into networks with 2-D convolutions, unless
    ``train.channels_last`` is off: measured 1.35-1.45x faster forward+backward for the demo's depthwise CNN
    student on one CPU thread (batch 128)."""
    convs = any(isinstance(m, nn.Conv2d) for d in distillers for m in d.modules())
    if cfg.channels_last and x.dim() == 4 and convs:
        return torch.channels_last
    return torch.contiguous_format


def _backend(ctx: Any) -> str:
    if not ctx.enabled:
        return "single process"
    return f"torch.distributed ({torch.distributed.get_backend()}), DistributedDataParallel"


def _reduce_step(loss: Tensor, terms: dict[str, Tensor], logits: Tensor, yb: Tensor, n_local: int,
                 n_global: int, ctx: Any, task: str) -> tuple[Tensor, dict[str, Tensor], int]:  # fmt: skip
    """The global batch's mean loss and terms and its correct count, from every rank's local ones."""
    correct = (logits.argmax(1) == yb).sum().float() if task == "classification" else loss.new_zeros(())
    vec = torch.stack([loss.detach().float() * n_local, *(v.detach().float() * n_local for v in terms.values()),
                       correct.detach()]).cpu()  # fmt: skip
    if torch.distributed.get_backend() == "nccl":
        vec = ctx.all_reduce_sum(vec.to(loss.device)).cpu()
    else:
        vec = ctx.all_reduce_sum(vec)
    mean = vec[:-1] / n_global
    return mean[0], dict(zip(terms, mean[1:])), int(vec[-1])


def _accepts(fn: Callable[..., Any], name: str) -> bool:
    """Whether ``fn`` takes the keyword ``name`` (privileged inputs go only to methods that read them)."""
    import inspect

    params = inspect.signature(fn).parameters
    return name in params or any(p.kind == p.VAR_KEYWORD for p in params.values())


def _cpu_state(module: nn.Module) -> dict[str, Any]:
    return {k: (v.detach().cpu() if isinstance(v, Tensor) else v) for k, v in module.state_dict().items()}


class _Amp:
    """Mixed precision on GPUs: autocast in bf16 or fp16 (with a gradient scaler); a no-op otherwise."""

    def __init__(self, mode: str, device: torch.device) -> None:
        self.enabled = mode != "off" and device.type == "cuda"
        self.dtype = torch.bfloat16 if mode == "bf16" else torch.float16
        self.scaler = torch.amp.GradScaler("cuda") if self.enabled and mode == "fp16" else None
        self.device = device

    def autocast(self):
        import contextlib

        if not self.enabled:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def backward(self, loss: Tensor) -> None:
        (self.scaler.scale(loss) if self.scaler else loss).backward()

    def unscale(self, opts) -> None:
        if self.scaler:
            for o in opts:
                self.scaler.unscale_(o)

    def step(self, opts) -> None:
        for o in opts:
            if self.scaler:
                self.scaler.step(o)
            else:
                o.step()
        if self.scaler:
            self.scaler.update()


class _Progress:
    """A rich progress bar with epoch, running loss terms, accuracy and ETA (silent when disabled)."""

    def __init__(self, label: str, epochs: int, steps: int, start: int, enabled: bool) -> None:
        self.enabled = enabled
        self.label, self.epochs, self.steps, self.start = label, epochs, steps, start
        self._n = 0
        if enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.p = Progress(
                TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("{task.fields[info]}"), TimeRemainingColumn(), transient=False,
            )  # fmt: skip
            self.task = self.p.add_task(label, total=(epochs - start) * steps, info="")

    def __enter__(self) -> _Progress:
        if self.enabled:
            self.p.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.enabled:
            self.p.__exit__(*exc)

    def step(self, running: dict[str, float]) -> None:
        self._n += 1
        n_in_epoch = (self._n - 1) % self.steps + 1
        if self.enabled and (n_in_epoch % 5 == 0):
            info = " ".join(f"{k}={v:.3f}" for k, v in running.items())
            self.p.update(self.task, completed=self._n, info=info)

    def epoch_done(self, row: dict[str, Any]) -> None:
        if self.enabled:
            key = next(
                (k for k in ("val_accuracy", "train_accuracy", "val_auc", "val_recon_error") if k in row),
                None,
            )
            info = f"loss={row['train_loss']:.4f}" + (f" {key}={row[key]:.4f}" if key else "")
            self.p.update(
                self.task,
                completed=(row["epoch"] - self.start) * self.steps,
                description=f"{self.label} epoch {row['epoch']}/{self.epochs}",
                info=info,
            )


def write_metrics(run: RunFolder, result: FitResult, extra: dict[str, Any] | None = None) -> None:
    atomic_write_json(run.metrics, {"history": result.history, "final": result.final, **(extra or {})})


def plot_curves(run: RunFolder, history: list[dict[str, Any]], title: str) -> None:
    """Training curves (loss terms and accuracies per epoch) as ``curves.png``, written atomically."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from edgekd.atomic import atomic_write_bytes

    if not history:
        return
    epochs = [r["epoch"] for r in history]
    keys = list(dict.fromkeys(k for r in history for k in r))  # stages may log different terms
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.8))
    for k in keys:
        if k.startswith("train_") and k != "train_accuracy":
            a1.plot(epochs, [r.get(k, float("nan")) for r in history], label=k[6:])
    if "val_loss" in keys:
        a1.plot(epochs, [r.get("val_loss", float("nan")) for r in history], "--", label="val loss")
    a1.set_xlabel("epoch"), a1.set_ylabel("loss"), a1.legend(), a1.set_title("loss terms")
    metric_keys = [
        k
        for k in ("train_accuracy", "val_accuracy", "test_accuracy", "val_auc", "val_recon_error")
        if k in keys
    ]
    for k in metric_keys:
        a2.plot(epochs, [r.get(k, float("nan")) for r in history], label=k)
    for r0, r1 in zip(history, history[1:]):  # stage boundaries
        if r0.get("stage") != r1.get("stage"):
            for ax in (a1, a2):
                ax.axvline(r0["epoch"] + 0.5, color="grey", lw=0.8, ls=":")
    a2.set_xlabel("epoch"), a2.set_title("metrics")
    if metric_keys:
        a2.legend()
    fig.suptitle(title)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    atomic_write_bytes(run.curves, buf.getvalue())
