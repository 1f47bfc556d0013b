"""Helpers shared by the benchmark scripts: the one run cache (``RunStore``, ``train_run``), mean/std, the
machine record, JSON results and rich tables.

Every benchmark is resumable per run: a finished run is one JSON record (``RunStore``) or one finished run
folder (``train_run``), so an interrupted benchmark, or a fresh machine with the committed records,
continues where it stopped instead of starting over.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
REPO = Path(__file__).resolve().parent.parent

os.environ.setdefault("EDGEKD_DATA_DIR", str(REPO.parent / "shared" / "datasets"))


def mean_std(values: list[float]) -> tuple[float, float]:
    if not values:
        return float("nan"), float("nan")
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def machine() -> dict[str, Any]:
    import torch

    return {"python": sys.version.split()[0], "torch": torch.__version__, "cpu": platform.processor() or platform.machine(),
            "threads": torch.get_num_threads(), "cores": os.cpu_count(), "date": time.strftime("%Y-%m-%d %H:%M")}  # fmt: skip


def write_results(name: str | Path, obj: dict[str, Any]) -> Path:
    """Write a benchmark's result atomically: a bare name goes to ``benchmarks/results/<name>.json``."""
    sys.path.insert(0, str(REPO))
    from edgekd.atomic import atomic_write_json

    path = name if isinstance(name, Path) else RESULTS / f"{name}.json"
    return atomic_write_json(path, obj)


def spec_key(spec: dict[str, Any], length: int = 12) -> str:
    """A short stable name for a run's settings (sha1 of their sorted JSON)."""
    return hashlib.sha1(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:length]


class RunStore:
    """One JSON record per finished run, ``<folder>/<key>.json``, written atomically when the run ends."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)

    def path(self, key: str) -> Path:
        return self.folder / f"{key}.json"

    def __contains__(self, key: str) -> bool:
        return self.path(key).exists()

    def get(self, key: str) -> dict[str, Any] | None:
        p = self.path(key)
        return json.loads(p.read_text()) if p.exists() else None

    def put(self, key: str, record: dict[str, Any]) -> dict[str, Any]:
        write_results(self.path(key), record)
        return record

    def get_or_run(self, key: str, run: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        """The stored record of ``key``, or ``run()``'s, stored first."""
        found = self.get(key)
        return found if found is not None else self.put(key, run())


def train_run(
    recipe: Any, runs: Path, *, distill: bool, progress: bool = False, **kwargs: Any
) -> tuple[Path, float]:
    """Train ``recipe`` (an edgekd ``Recipe``) into ``runs/<name>`` the way ``edgekd train``/``distill`` does,
    unless that folder already holds a finished run (:meth:`edgekd.runfolder.RunFolder.state`); a partial
    one resumes from its checkpoint, anything else there is replaced. Returns the folder and the training
    seconds (timed and kept in ``time.json``; for older folders, the sum of the epochs' seconds)."""
    from edgekd.distill.runner import run_training
    from edgekd.runfolder import RunFolder

    folder = Path(runs) / recipe.name
    timing = folder / "time.json"
    state = RunFolder(folder).state(recipe.train.epochs)
    if state.holds == "finished":
        if timing.exists():
            return folder, float(json.loads(timing.read_text())["seconds"])
        history = json.loads((folder / "metrics.json").read_text()).get("history", [])
        return folder, float(sum(h.get("seconds", 0.0) for h in history))
    t0 = time.perf_counter()
    resume = state.holds == "partial" and (state.epoch or 0) > 0  # else: whatever is there is replaced
    run_training(
        recipe, runs, distill=distill, resume=resume, overwrite=not resume, progress=progress, **kwargs
    )
    seconds = time.perf_counter() - t0
    write_results(timing, {"seconds": round(seconds, 2), "resumed": resume})
    return folder, seconds


def print_table(title: str, columns: list[str], rows: list[list[Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title=title)
    for c in columns:
        t.add_column(c)
    for r in rows:
        t.add_row(*[str(v) for v in r])
    Console().print(t)
