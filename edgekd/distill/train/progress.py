"""The rich progress bar of a run: epoch, running loss terms, accuracy and ETA."""

from __future__ import annotations

from typing import Any

SHOWN_METRICS = (
    "val_accuracy",
    "train_accuracy",
    "val_auc",
    "val_recon_error",
)  # the first in a row is shown


class Progress:
    """A rich progress bar with epoch, running loss terms, accuracy and ETA (silent when disabled)."""

    def __init__(self, label: str, epochs: int, steps: int, start: int, enabled: bool) -> None:
        self.enabled = enabled
        self.label, self.epochs, self.steps, self.start = label, epochs, steps, start
        self._n = 0
        if enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn
            from rich.progress import Progress as RichProgress

            self.p = RichProgress(
                TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("{task.fields[info]}"), TimeRemainingColumn(), transient=False,
            )  # fmt: skip
            self.task = self.p.add_task(label, total=(epochs - start) * steps, info="")

    def __enter__(self) -> Progress:
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
            key = next((k for k in SHOWN_METRICS if k in row), None)
            info = f"loss={row['train_loss']:.4f}" + (f" {key}={row[key]:.4f}" if key else "")
            self.p.update(
                self.task,
                completed=(row["epoch"] - self.start) * self.steps,
                description=f"{self.label} epoch {row['epoch']}/{self.epochs}",
                info=info,
            )
