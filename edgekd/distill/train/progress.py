"""The progress of a run: a rich bar (epoch, running loss terms, accuracy, ETA) on a terminal, one plain
line per epoch anywhere else (a log file sees each epoch as it ends, not the bar at the end)."""

from __future__ import annotations

import time
from typing import Any

from edgekd.console import is_terminal, plain_line

SHOWN_METRICS = (
    "val_accuracy",
    "train_accuracy",
    "val_auc",
    "val_recon_error",
)  # the first in a row is shown
SHORT = {"val_accuracy": "val_acc", "train_accuracy": "train_acc"}  # accuracies print as percentages


class Progress:
    """A rich progress bar with epoch, running loss terms, accuracy and ETA on a terminal; one flushed line
    per epoch when stdout is not a terminal; silent when disabled."""

    def __init__(self, label: str, epochs: int, steps: int, start: int, enabled: bool) -> None:
        self.enabled = enabled
        self.label, self.epochs, self.steps, self.start = label, epochs, steps, start
        self._n = 0
        self.live = enabled and is_terminal()
        self._t = time.perf_counter()
        if self.live:
            from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn
            from rich.progress import Progress as RichProgress

            self.p = RichProgress(
                TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("{task.fields[info]}"), TimeRemainingColumn(), transient=False,
            )  # fmt: skip
            self.task = self.p.add_task(label, total=(epochs - start) * steps, info="")

    def __enter__(self) -> Progress:
        self._t = time.perf_counter()
        if self.live:
            self.p.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.live:
            self.p.__exit__(*exc)

    def step(self, running: dict[str, float]) -> None:
        self._n += 1
        n_in_epoch = (self._n - 1) % self.steps + 1
        if self.live and (n_in_epoch % 5 == 0):
            info = " ".join(f"{k}={v:.3f}" for k, v in running.items())
            self.p.update(self.task, completed=self._n, info=info)

    def epoch_done(self, row: dict[str, Any]) -> None:
        if not self.enabled:
            return
        key = next((k for k in SHOWN_METRICS if k in row), None)
        if not self.live:
            now = time.perf_counter()
            plain_line(epoch_line(self.label, row, self.epochs, key, now - self._t))
            self._t = now
            return
        info = f"loss={row['train_loss']:.4f}" + (f" {key}={row[key]:.4f}" if key else "")
        self.p.update(
            self.task,
            completed=(row["epoch"] - self.start) * self.steps,
            description=f"{self.label} epoch {row['epoch']}/{self.epochs}",
            info=info,
        )


def epoch_line(label: str, row: dict[str, Any], epochs: int, key: str | None, seconds: float) -> str:
    """``"train r epoch 3/12  loss 0.4123  val_acc 97.85%  12.3 s"``: one epoch's row as a log line."""
    parts = [f"{label} epoch {row['epoch']}/{epochs}"]
    if "train_loss" in row:
        parts.append(f"loss {row['train_loss']:.4f}")
    if key is not None:
        value = f"{100 * row[key]:.2f}%" if key in SHORT else f"{row[key]:.4f}"
        parts.append(f"{SHORT.get(key, key)} {value}")
    parts.append(f"{seconds:.1f} s")
    return "  ".join(parts)
