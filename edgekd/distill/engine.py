"""The training loop shared by every method.

Seeds, optimizer and LR schedule from the recipe, rich progress (epoch, loss terms, accuracy, ETA),
``metrics.json`` and ``curves.png`` in the run folder, an atomic checkpoint after every epoch, exact
resume (model, optimizer, scheduler and every RNG state are restored), and a stop with a clear message
on a NaN/inf loss that keeps the last good checkpoint.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from edgekd.atomic import atomic_torch_save, atomic_write_json
from edgekd.data import ArrayDataset
from edgekd.distill.methods.base import Distiller
from edgekd.errors import EdgekdError
from edgekd.recipe import TrainConfig
from edgekd.runfolder import RunFolder

CHECKPOINT_FORMAT = "edgekd-checkpoint/1"


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


def random_translate(x: Tensor, max_shift: int, gen: torch.Generator) -> Tensor:
    """Shift each image by an independent integer offset in [-max_shift, max_shift] (zero fill)."""
    if max_shift <= 0 or x.dim() != 4:
        return x
    n, _, h, w = x.shape
    pad = torch.nn.functional.pad(x, (max_shift, max_shift, max_shift, max_shift))
    dy = torch.randint(0, 2 * max_shift + 1, (n,), generator=gen)
    dx = torch.randint(0, 2 * max_shift + 1, (n,), generator=gen)
    rows = (dy[:, None] + torch.arange(h)[None]).view(n, 1, h, 1).expand(n, x.shape[1], h, w + 2 * max_shift)
    out = pad.gather(2, rows)
    cols = (dx[:, None] + torch.arange(w)[None]).view(n, 1, 1, w).expand(n, x.shape[1], h, w)
    return out.gather(3, cols)


@torch.no_grad()
def evaluate(model: nn.Module, data: ArrayDataset, batch_size: int = 1024) -> dict[str, float]:
    """Top-1 accuracy, error count and mean CE of ``model`` on ``data``."""
    if len(data) == 0:
        return {}
    was_training = model.training
    model.eval()
    correct, loss, n = 0, 0.0, len(data)
    for i in range(0, n, batch_size):
        xb = torch.from_numpy(data.x[i : i + batch_size])
        yb = torch.from_numpy(data.y[i : i + batch_size])
        logits = model(xb)
        loss += float(torch.nn.functional.cross_entropy(logits, yb, reduction="sum"))
        correct += int((logits.argmax(1) == yb).sum())
    model.train(was_training)
    return {"accuracy": correct / n, "errors": n - correct, "loss": loss / n}


def _apply_max_norm(model: nn.Module, max_norm: float) -> None:
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Linear):
                norms = m.weight.norm(dim=1, keepdim=True).clamp(min=1e-12)
                m.weight.mul_(torch.clamp(max_norm / norms, max=1.0))


class Trainer:
    """Runs ``distiller`` on ``train`` for ``cfg.epochs`` epochs, checkpointing into ``run``."""

    def __init__(
        self,
        distiller: Distiller,
        cfg: TrainConfig,
        run: RunFolder,
        *,
        seed: int = 0,
        jitter: int = 0,
        progress: bool = True,
        label: str = "train",
    ) -> None:
        self.distiller = distiller
        self.cfg = cfg
        self.run = run
        self.seed = seed
        self.jitter = jitter
        self.progress = progress
        self.label = label

    def fit(
        self,
        train: ArrayDataset,
        val: ArrayDataset | None = None,
        test: ArrayDataset | None = None,
        *,
        resume: bool = False,
        stop_after_epoch: int | None = None,
    ) -> FitResult:
        cfg = self.cfg
        torch.set_num_threads(resolve_threads(cfg.threads))
        seed_everything(self.seed)
        gen = torch.Generator().manual_seed(self.seed)
        params = list(self.distiller.trainable_parameters())
        opt = make_optimizer(params, cfg)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor(cfg))
        history: list[dict[str, Any]] = []
        start = 0
        self.loss_reference: list[float] = []
        if resume and self.run.checkpoint.exists():
            start, history = self._load_checkpoint(opt, sched, gen)
        elif resume:
            raise EdgekdError(f"{self.run.checkpoint}: nothing to resume; run without --resume")

        x_all = torch.from_numpy(train.x)
        y_all = torch.from_numpy(train.y)
        n = len(y_all)
        steps = max(1, math.ceil(n / cfg.batch_size))
        student = self.distiller.student
        bar = _Progress(self.label, cfg.epochs, steps, start, enabled=self.progress)
        with bar:
            for epoch in range(start, cfg.epochs):
                self.distiller.train()
                self.distiller.on_epoch_start(epoch, cfg.epochs)
                t0 = time.perf_counter()
                perm = torch.randperm(n, generator=gen)
                sums: dict[str, float] = {}
                correct = 0
                for step in range(steps):
                    idx = perm[step * cfg.batch_size : (step + 1) * cfg.batch_size]
                    xb, yb = x_all[idx], y_all[idx]
                    if self.jitter:
                        xb = random_translate(xb, self.jitter, gen)
                    logits, terms = self.distiller.forward_train(xb, yb)
                    loss = sum(terms.values())
                    self._check_loss(loss, terms, epoch, step)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    if cfg.grad_clip > 0:
                        torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
                    opt.step()
                    if cfg.max_norm > 0:
                        _apply_max_norm(student, cfg.max_norm)
                    for k, v in terms.items():
                        sums[k] = sums.get(k, 0.0) + float(v.detach()) * len(idx)
                    sums["loss"] = sums.get("loss", 0.0) + float(loss.detach()) * len(idx)
                    correct += int((logits.argmax(1) == yb).sum())
                    bar.step({k: v / ((step + 1) * cfg.batch_size) for k, v in sums.items()})
                sched.step()
                row: dict[str, Any] = {"epoch": epoch + 1, "lr": cfg.lr * lr_factor(cfg)(epoch),
                                       "seconds": round(time.perf_counter() - t0, 3)}  # fmt: skip
                row.update({f"train_{k}": v / n for k, v in sums.items()})
                row["train_accuracy"] = correct / n
                if val is not None and len(val):
                    row.update({f"val_{k}": v for k, v in evaluate(student, val).items()})
                if test is not None and cfg.eval_test_each_epoch:
                    row.update({f"test_{k}": v for k, v in evaluate(student, test).items()})
                bad = non_finite_tensors(self.distiller)
                if bad:
                    self._diverged(f"{len(bad)} parameter(s)/buffer(s) became non-finite in epoch {epoch + 1} "
                                   f"(first: {bad[0]!r}) although the loss stayed finite")  # fmt: skip
                history.append(row)
                self._save_checkpoint(epoch + 1, opt, sched, gen, history)
                bar.epoch_done(row)
                if stop_after_epoch is not None and epoch + 1 >= stop_after_epoch and epoch + 1 < cfg.epochs:
                    raise TrainingInterrupted(f"stopped after epoch {epoch + 1}")
        self.distiller.on_train_end(x_all)
        final: dict[str, Any] = {}
        if test is not None:
            final = {f"test_{k}": v for k, v in evaluate(student, test).items()}
        return FitResult(history, final)

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
            self.distiller.load_state_dict(ck["distiller"])
            last_good = int(ck["epoch"])
        kept = (
            f"last good checkpoint kept ({self.run.checkpoint}, epoch {last_good})"
            if last_good
            else "no good epoch yet"
        )
        raise TrainingDiverged(f"{self.label}: {what}; {kept}; lower train.lr or check the data", last_good)

    # --- checkpoints -----------------------------------------------------------------------------
    def _save_checkpoint(self, epoch: int, opt, sched, gen: torch.Generator, history: list) -> None:
        atomic_torch_save(
            self.run.checkpoint,
            {
                "format": CHECKPOINT_FORMAT,
                "epoch": epoch,
                "distiller": self.distiller.state_dict(),
                "optimizer": opt.state_dict(),
                "scheduler": sched.state_dict(),
                "generator": gen.get_state(),
                "torch_rng": torch.get_rng_state(),
                "history": history,
                "seed": self.seed,
                "loss_reference": list(self.loss_reference),
            },
        )

    def _load_checkpoint(self, opt, sched, gen: torch.Generator) -> tuple[int, list]:
        from edgekd.models.checkpoint import read_checkpoint

        ck = read_checkpoint(self.run.checkpoint)
        if not isinstance(ck, dict) or ck.get("format") != CHECKPOINT_FORMAT:
            raise EdgekdError(
                f"{self.run.checkpoint}: not an edgekd training checkpoint; delete it to start over"
            )
        try:
            self.distiller.load_state_dict(ck["distiller"])
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
            opt.load_state_dict(ck["optimizer"])
            sched.load_state_dict(ck["scheduler"])
            gen.set_state(ck["generator"])
            torch.set_rng_state(ck["torch_rng"])
            start, history = int(ck["epoch"]), list(ck["history"])
        except (KeyError, TypeError, ValueError, RuntimeError) as e:
            raise EdgekdError(
                f"{self.run.checkpoint}: incomplete training checkpoint ({type(e).__name__}: {e}); "
                "use --overwrite to start again"
            ) from None
        self.loss_reference = [float(v) for v in ck.get("loss_reference", [])]
        return start, history


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
            acc = row.get("val_accuracy", row.get("train_accuracy"))
            which = "val" if "val_accuracy" in row else "train"
            self.p.update(
                self.task,
                completed=(row["epoch"] - self.start) * self.steps,
                description=f"{self.label} epoch {row['epoch']}/{self.epochs}",
                info=f"loss={row['train_loss']:.4f} {which}_acc={acc:.4f}",
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
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.8))
    for k in history[0]:
        if k.startswith("train_") and k != "train_accuracy":
            a1.plot(epochs, [r[k] for r in history], label=k[6:])
    if "val_loss" in history[0]:
        a1.plot(epochs, [r["val_loss"] for r in history], "--", label="val ce")
    a1.set_xlabel("epoch"), a1.set_ylabel("loss"), a1.legend(), a1.set_title("loss terms")
    for k in ("train_accuracy", "val_accuracy", "test_accuracy"):
        if k in history[0]:
            a2.plot(epochs, [r[k] for r in history], label=k.replace("_accuracy", ""))
    a2.set_xlabel("epoch"), a2.set_ylabel("top-1"), a2.legend(), a2.set_title("accuracy")
    fig.suptitle(title)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    atomic_write_bytes(run.curves, buf.getvalue())
