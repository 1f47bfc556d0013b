"""The run folder: the one place that defines where every stage reads and writes.

runs/<name>/
  recipe.yaml       resolved recipe (defaults filled, overrides applied)
  seeds.json        seeds used
  data.json         data set, splits, normalisation statistics
  model.pt          a model trained on labels (``edgekd train``)
  student.pt        a distilled student (``edgekd distill``)
  teacher.pt        copy of the teacher used (optional)
  checkpoint.pt     last complete epoch (resume)
  metrics.json      per-epoch metrics and final test metrics
  curves.png        training curves
  export/<target>/  one folder per export target or format
  report.{json,md,html}, plots/
  .edgekd.lock      locked (flock) while a run writes the folder

A run holds an exclusive ``fcntl.flock`` on ``.edgekd.lock`` while it writes the folder
(:meth:`RunFolder.lock`); a second edgekd process on the same folder is refused at once. The OS drops the
lock when the process ends, also on a crash or ``kill -9``, so a stale lock file is harmless.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgekd.errors import EdgekdError
from edgekd.names import child_path

LOCK_FILE = ".edgekd.lock"
# Locks this process holds: (device, inode) of the lock file -> [fd, depth]. Re-entrant: `edgekd run`
# holds the run folder and the student's training, in the same folder, takes it again.
_HELD: dict[tuple[int, int], list[int]] = {}


@dataclass(frozen=True)
class RunFolder:
    root: Path

    def __init__(self, root: str | Path) -> None:
        object.__setattr__(self, "root", Path(root))

    # --- files -------------------------------------------------------------------------------
    @property
    def recipe(self) -> Path:
        return self.root / "recipe.yaml"

    @property
    def seeds(self) -> Path:
        return self.root / "seeds.json"

    @property
    def data_info(self) -> Path:
        return self.root / "data.json"

    @property
    def model(self) -> Path:
        return self.root / "model.pt"

    @property
    def student(self) -> Path:
        return self.root / "student.pt"

    @property
    def teacher(self) -> Path:
        return self.root / "teacher.pt"

    @property
    def checkpoint(self) -> Path:
        return self.root / "checkpoint.pt"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.json"

    @property
    def curves(self) -> Path:
        return self.root / "curves.png"

    @property
    def export_root(self) -> Path:
        return self.root / "export"

    def export_dir(self, target: str) -> Path:
        """``export/<target>``; ``target`` (a target or format name) must be a safe name, and ``export``
        (a link in a downloaded run folder?) must stay inside the run folder."""
        child_path(self.root, "export", str(self.root), "folder")
        return child_path(self.export_root, target, str(self.export_root), "target name")

    @property
    def plots(self) -> Path:
        return self.root / "plots"

    def report(self, ext: str) -> Path:
        return self.root / f"report.{ext}"

    # --- helpers -----------------------------------------------------------------------------
    def ensure(self) -> RunFolder:
        self.root.mkdir(parents=True, exist_ok=True)
        return self

    @property
    def lock_file(self) -> Path:
        return self.root / LOCK_FILE

    @contextlib.contextmanager
    def lock(self) -> Iterator[RunFolder]:
        """Create the folder and hold its lock while the block runs; refuse (one line) if another process
        holds it. Re-entrant within one process; a folder moved aside keeps its own lock."""
        self.ensure()
        key = _held_key(self.lock_file)
        if key is None:
            fd = _acquire(self.lock_file, self.root)
            st = os.fstat(fd)
            key = (st.st_dev, st.st_ino)
            _HELD[key] = [fd, 0]
        _HELD[key][1] += 1
        try:
            yield self
        finally:
            _HELD[key][1] -= 1
            if not _HELD[key][1]:
                os.close(_HELD.pop(key)[0])  # closing the file drops the lock

    @contextlib.contextmanager
    def lock_if_used(self) -> Iterator[RunFolder]:
        """:meth:`lock` for a reader that also writes (export, bench): held only when a locking run made the
        lock file, so nothing is added to a folder that never had one (a downloaded run)."""
        if not self.lock_file.exists():
            yield self
            return
        with self.lock():
            yield self

    def check_unlocked(self) -> None:
        """Refuse at once (one line) if another process is writing this folder; creates nothing."""
        if not self.lock_file.exists() or _held_key(self.lock_file) is not None:
            return
        with contextlib.suppress(FileNotFoundError):
            os.close(_acquire(self.lock_file, self.root, create=False))

    def trained_model(self) -> Path:
        """The run's main model: the distilled student if present, else the label-trained model."""
        for p in (self.student, self.model):
            if p.exists():
                return p
        raise EdgekdError(
            f"{self.root}: no student.pt or model.pt in this run folder; run `edgekd train` or `edgekd distill` first"
        )

    def read_json(self, path: Path) -> Any:
        try:
            return json.loads(path.read_text())
        except FileNotFoundError:
            raise EdgekdError(f"{path}: missing; was the previous stage run on {self.root}?") from None
        except json.JSONDecodeError as e:
            raise EdgekdError(f"{path}: not valid JSON ({e}); delete it and re-run the stage") from None


def _held_key(lock_file: Path) -> tuple[int, int] | None:
    """The key of ``lock_file`` in :data:`_HELD` if this process holds it."""
    try:
        st = os.stat(lock_file, follow_symlinks=False)
    except OSError:
        return None
    key = (st.st_dev, st.st_ino)
    return key if key in _HELD else None


def _acquire(lock_file: Path, root: Path, create: bool = True) -> int:
    """An fd holding an exclusive flock on ``lock_file`` (not following links, never blocking)."""
    flags = os.O_RDWR | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC | (os.O_CREAT if create else 0)
    try:
        fd = os.open(lock_file, flags, 0o644)
    except FileNotFoundError:
        if not create:
            raise
        raise EdgekdError(f"{root}: the run folder vanished while it was being locked; run again") from None
    except OSError as e:
        raise EdgekdError(
            f"{lock_file}: cannot open the run folder's lock file ({e.strerror}); remove it"
        ) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        os.close(fd)
        if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            raise EdgekdError(
                f"{root}: another edgekd process is writing this run folder; wait for it to finish, or choose "
                "another name (--set name=...)"
            ) from None
        raise EdgekdError(f"{lock_file}: cannot lock the run folder ({e.strerror})") from None
    return fd


def write_metrics(run: RunFolder, result: Any, extra: dict[str, Any] | None = None) -> None:
    """``metrics.json``: the epochs' rows and final figures of ``result`` (a ``FitResult``), plus ``extra``."""
    from edgekd.atomic import atomic_write_json

    atomic_write_json(run.metrics, {"history": result.history, "final": result.final, **(extra or {})})


def plot_curves(run: RunFolder, history: list[dict[str, Any]], title: str) -> None:
    """Training curves (loss terms and accuracies per epoch) as ``curves.png``, written atomically."""
    if not history:
        return
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from edgekd.atomic import atomic_write_bytes

    epochs = [r["epoch"] for r in history]
    keys = list(dict.fromkeys(k for r in history for k in r))  # stages may log different terms
    fig, (losses, metrics) = plt.subplots(1, 2, figsize=(10, 3.8))
    for k in keys:
        if k.startswith("train_") and k != "train_accuracy":
            losses.plot(epochs, [r.get(k, float("nan")) for r in history], label=k[6:])
    if "val_loss" in keys:
        losses.plot(epochs, [r.get("val_loss", float("nan")) for r in history], "--", label="val loss")
    losses.set_xlabel("epoch"), losses.set_ylabel("loss"), losses.legend(), losses.set_title("loss terms")
    metric_keys = [k for k in CURVE_METRICS if k in keys]
    for k in metric_keys:
        metrics.plot(epochs, [r.get(k, float("nan")) for r in history], label=k)
    for r0, r1 in zip(history, history[1:]):  # stage boundaries
        if r0.get("stage") != r1.get("stage"):
            for ax in (losses, metrics):
                ax.axvline(r0["epoch"] + 0.5, color="grey", lw=0.8, ls=":")
    metrics.set_xlabel("epoch"), metrics.set_title("metrics")
    if metric_keys:
        metrics.legend()
    fig.suptitle(title)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    atomic_write_bytes(run.curves, buf.getvalue())


CURVE_METRICS = ("train_accuracy", "val_accuracy", "test_accuracy", "val_auc", "val_recon_error")
