"""Helpers shared by the benchmark scripts: timing, mean/std, JSON results and rich tables."""

from __future__ import annotations

import os
import platform
import statistics
import sys
import time
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


def write_results(name: str, obj: dict[str, Any]) -> Path:
    sys.path.insert(0, str(REPO))
    from edgekd.atomic import atomic_write_json

    return atomic_write_json(RESULTS / f"{name}.json", obj)


def print_table(title: str, columns: list[str], rows: list[list[Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title=title)
    for c in columns:
        t.add_column(c)
    for r in rows:
        t.add_row(*[str(v) for v in r])
    Console().print(t)
