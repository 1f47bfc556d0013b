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

Lifecycle: :meth:`RunFolder.state` says what a folder holds (empty, a partial run and its last epoch, a
finished run); :meth:`RunFolder.claim` applies the one rule for a new run (a folder that holds a run is
refused unless ``resume`` or ``overwrite``) before anything is loaded, and :meth:`RunClaim.hold` locks the
folder, re-checks it and moves the previous run aside (:meth:`RunFolder.move_aside`) when overwriting.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgekd.errors import EdgekdError
from edgekd.names import child_path

LOCK_FILE = ".edgekd.lock"
# Locks this process holds: (device, inode) of the lock file -> [fd, depth]. Re-entrant: `edgekd run`
# holds the run folder and the student's training, in the same folder, takes it again.
_HELD: dict[tuple[int, int], list[int]] = {}
# The runs `edgekd run` trains inside its student's folder (runs/<name>/teacher/, baseline/): not the student's run.
CHAIN_RUNS = ("teacher", "baseline")
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunState:
    """What a run folder holds: ``empty``, ``partial`` (started, not finished) or ``finished``; ``epoch`` is
    the checkpoint's last complete epoch (None: no checkpoint, -1: one that cannot be read)."""

    holds: str
    epoch: int | None = None

    def describe(self) -> str:
        """``a finished run`` / ``an interrupted run (checkpointed at epoch 2)``, for messages."""
        if self.holds == "finished":
            return "a finished run"
        return "an interrupted run" + (f" (checkpointed at epoch {self.epoch})" if self.epoch else "")


def checkpoint_epoch(path: Path) -> int | None:
    """The last complete epoch recorded in the training checkpoint ``path`` (None: no checkpoint, -1: not
    readable). Only the pickled header is read: the tensors are memory-mapped, never loaded."""
    if not path.exists():
        return None
    if not path.is_file():
        return -1
    import torch

    try:
        ck = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        return int(ck.get("epoch", -1)) if isinstance(ck, dict) else -1
    except Exception:  # noqa: BLE001  (any unreadable checkpoint is the same to the state: not complete)
        return -1


@dataclass(frozen=True)
class RunClaim:
    """A run folder checked by :meth:`RunFolder.claim`, to be held while the run writes it."""

    run: RunFolder
    state: RunState
    move: bool  # overwrite a folder that holds a run: move it aside when held
    keep: tuple[str, ...] = ()
    epochs: int | None = None

    @contextlib.contextmanager
    def hold(self) -> Iterator[Path | None]:
        """Lock the folder while the block runs (another edgekd process is refused), check that it still
        holds what was claimed, and move the previous run aside if overwriting (yields where it went)."""
        with contextlib.ExitStack() as held:
            held.enter_context(self.run.lock())
            if self.run.state(self.epochs, self.keep) != self.state:
                raise EdgekdError(
                    f"{self.run.root}: changed while this run was being prepared (another edgekd process?); "
                    "run again"
                )
            moved = None
            if self.move:
                moved = self.run.move_aside()
                log.info("moved the previous run to %s", moved)
                held.enter_context(self.run.lock())  # the new, empty folder
            yield moved


@dataclass(frozen=True)
class RunFolder:
    root: Path

    def __init__(self, root: str | Path) -> None:
        object.__setattr__(self, "root", Path(root))

    @classmethod
    def named(cls, runs_dir: str | Path, name: str, run_dir: str | Path | None = None) -> RunFolder:
        """The run folder of run ``name`` in ``runs_dir`` (``runs_dir/<name>``), or ``run_dir`` when given."""
        return cls(run_dir if run_dir is not None else Path(runs_dir) / name)

    @staticmethod
    def resolve_model(path: str | Path, runs_dir: str | Path | None = None) -> Path:
        """The model file a recipe names (a teacher, a library member): a run folder (its trained model) or
        a checkpoint file.

        A relative path is looked up in the runs folder the user gave first: ``runs/hinton-teacher`` with
        ``--runs-dir /data/runs`` means ``/data/runs/hinton-teacher``; a bare name (``hinton-teacher``) is a
        run in ``--runs-dir``; otherwise the path is taken relative to the current folder.
        """
        p = Path(path)
        candidates: list[Path] = []
        if runs_dir is not None and not p.is_absolute():
            rd = Path(runs_dir)
            if p.parts and p.parts[0] == "runs" and len(p.parts) > 1:
                candidates.append(rd.joinpath(*p.parts[1:]))
            candidates.append(rd / p)
        candidates.append(p)
        for c in candidates:
            if c.is_dir():
                return RunFolder(c).trained_model()
            if c.exists():
                return c
        where = (
            f" (looked in {', '.join(str(c) for c in dict.fromkeys(candidates))})"
            if len(candidates) > 1
            else ""
        )
        raise EdgekdError(
            f"teacher.path={str(p)!r}: no such run folder or checkpoint{where}; train a teacher first"
        )

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

    # --- lifecycle ---------------------------------------------------------------------------
    def state(self, epochs: int | None = None, keep: Iterable[str] = ()) -> RunState:
        """What the folder holds besides its lock file and the entries named in ``keep`` (e.g. the
        ``teacher/`` and ``baseline/`` runs `edgekd run` trains beside its student): ``empty``;
        ``finished`` (a final network, and a checkpoint, if any, that reached ``epochs``); else ``partial``."""
        skip = {LOCK_FILE, *keep}
        if not self.root.is_dir() or all(p.name in skip for p in self.root.iterdir()):
            return RunState("empty")
        epoch = checkpoint_epoch(self.checkpoint)
        reached = epoch is None or epoch >= (0 if epochs is None else epochs)
        final = self.model.exists() or self.student.exists()
        return RunState("finished" if final and reached else "partial", epoch)

    def claim(
        self,
        resume: bool,
        overwrite: bool,
        keep: Iterable[str] = (),
        epochs: int | None = None,
        check_lock: bool = True,
        resume_may_start: bool = False,
    ) -> RunClaim:
        """Check, before anything is loaded or written, that a run may start here: a folder that holds a
        run is refused unless ``resume`` (continue it) or ``overwrite`` (move it aside first), and a
        ``resume`` needs a run to continue, unless ``resume_may_start`` (``edgekd run --resume``: reuse
        the finished stages if there are any, so a first ``make demo`` starts one). ``check_lock``: refuse
        at once if another process writes it. Returns the claim to :meth:`RunClaim.hold` once everything
        else is validated."""
        if resume and overwrite:
            raise EdgekdError(
                "--resume and --overwrite exclude each other: continue the run, or start it again"
            )
        if check_lock:
            self.check_unlocked()
        keep = tuple(keep)
        state = self.state(epochs, keep)
        if resume and state.holds == "empty" and not resume_may_start:
            raise EdgekdError(f"{self.root}: nothing to resume (no run in this folder); run without --resume")
        if state.holds != "empty" and not (resume or overwrite):
            raise EdgekdError(
                f"{self.root}: holds {state.describe()}; pass --resume to continue it, --overwrite to move it "
                "aside and start again, or choose another name (--set name=...)"
            )
        return RunClaim(self, state, overwrite and state.holds != "empty", keep, epochs)

    def move_aside(self) -> Path:
        """Rename the folder to ``<name>.old-<timestamp>`` (never deleting anything); returns the new path."""
        stamp = time.strftime("%Y%m%d-%H%M%S")
        target = self.root.with_name(f"{self.root.name}.old-{stamp}")
        n = 1
        while target.exists():
            n += 1
            target = self.root.with_name(f"{self.root.name}.old-{stamp}-{n}")
        self.root.rename(target)
        return target

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
