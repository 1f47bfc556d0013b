"""Read the ``bench/<target>/bench.json`` files ``edgekd bench`` wrote into a run folder: the rows and
table ``edgekd profile`` shows under its estimates (profile reads them itself, never the harness)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from edgekd.safetext import markup


def device_row(run_dir: str | Path) -> list[dict[str, Any]]:
    """Measured device rows for ``edgekd profile``: one per ``bench/<target>/bench.json``."""
    rows = []
    for f in sorted(Path(run_dir).glob("bench/*/bench.json")):
        try:
            r = json.loads(f.read_text())
        except (OSError, ValueError):
            continue
        perf, acc, mem = r.get("performance") or {}, r.get("accuracy") or {}, r.get("memory") or {}
        rows.append({
            "target": (r.get("target") or {}).get("name", f.parent.name),
            "device": r.get("device"),
            "emulated": bool(r.get("emulated")),
            "ms_per_inference": perf.get("us_per_inference", 0) / 1000 if perf else None,
            "top1_accuracy": acc.get("top1_accuracy"),
            "bit_exact": acc.get("bit_exact"),
            "flash_bytes": mem.get("flash_bytes"),
            "ram_bytes": mem.get("ram_bytes"),
            "file": str(f),
        })  # fmt: skip
    return rows


def device_table(rows: list[dict[str, Any]]) -> Any:
    """A rich table of :func:`device_row` rows (``edgekd profile`` prints it under its estimates)."""
    from rich.table import Table

    t = Table(title="measured on device (edgekd bench)", header_style="bold")
    for h in ("target", "device", "ms/inference", "top-1", "bit-exact", "flash B", "RAM B"):
        t.add_column(h, justify="left" if h in ("target", "device") else "right")
    for r in rows:
        ms = r["ms_per_inference"]
        top1 = r["top1_accuracy"]
        t.add_row(markup(r["target"]), markup(str(r["device"] or "").split(" (")[0]),
                  "" if ms is None else f"{ms:.3f}" + (" (emulated)" if r["emulated"] else ""),
                  "" if top1 is None else f"{100 * top1:.2f}%", str(r["bit_exact"]),
                  "" if r["flash_bytes"] is None else f"{r['flash_bytes']:,}",
                  "" if r["ram_bytes"] is None else f"{r['ram_bytes']:,}")  # fmt: skip
    return t
