"""Arena planners vs the real TFLite Micro interpreter.

For every model: TFLM's measured arena (head/tail/total, host build), our re-implementation of its
greedy planner (must equal TFLM's head), and our optimized plan (operator re-ordering + placement),
written back into the flatbuffer and measured again by TFLM ("confirmed").

Usage:
    python benchmarks/planner_vs_tflm.py [FILES...] [--random N] [--no-builtin] [--out PATH]

Built-in set: the edgekd.graph sample models (test models + MLPerf-Tiny-like architectures),
``N`` random branchy DAG models (default 12) and any ``runs/*/export/*/model_int8.tflite``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edgekd.atomic import atomic_write_json  # noqa: E402
from edgekd.errors import EdgekdError  # noqa: E402
from edgekd.graph import measure_arena, read_tflite  # noqa: E402
from edgekd.graph.planner import apply_plan, greedy_plan, optimized_plan  # noqa: E402
from edgekd.graph.sample_models import BENCH_BUILDERS, BUILDERS, sample_models  # noqa: E402

# TFLM head bytes of the MLPerf Tiny reference int8 models (docs/ARCHITECTURE.md)
REFERENCE_HEAD = {
    "kws_dscnn_like": 16000,
    "ic_resnet8_like": 49152,
    "vww_mobilenet_like": 73728,
    "ad_fcae_like": 768,
}


def bench_one(name: str, path: Path) -> dict[str, Any]:
    entry: dict[str, Any] = {"name": name, "path": str(path)}
    try:
        m = read_tflite(path)
        tflm = measure_arena(m.data)
    except EdgekdError as e:
        entry["error"] = str(e)
        return entry
    t0 = time.perf_counter()
    g = greedy_plan(m)
    t1 = time.perf_counter()
    o = optimized_plan(m)
    t2 = time.perf_counter()
    confirmed = measure_arena(apply_plan(m, o))["head"] if o.head < g.head else tflm["head"]
    entry.update(
        {
            "kind": m.kind,
            "num_operators": len(m.operators),
            "tflm": tflm,
            "greedy_head": g.head,
            "greedy_matches_tflm": g.head == tflm["head"],
            "peak_live_bytes": g.peak_live,
            "optimized_head": o.head,
            "optimized_confirmed_by_tflm": confirmed,
            "optimized_method": o.method,
            "needs_offline_offsets": o.needs_offline_offsets,
            "order_found": o.order,
            "order_changed": o.order != list(range(len(m.operators))),
            "saving_bytes": tflm["head"] - o.head,
            "saving_pct": round(100.0 * (tflm["head"] - o.head) / tflm["head"], 2) if tflm["head"] else 0.0,
            "greedy_ms": round(1000 * (t1 - t0), 3),
            "optimized_ms": round(1000 * (t2 - t1), 3),
        }
    )
    if name in REFERENCE_HEAD:
        entry["mlperf_reference_head"] = REFERENCE_HEAD[name]
    return entry


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("files", nargs="*", type=Path, help=".tflite files to add")
    ap.add_argument("--random", type=int, default=12, help="number of random branchy models (default 12)")
    ap.add_argument("--no-builtin", action="store_true", help="only the given files")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "planner_vs_tflm.json")
    args = ap.parse_args(argv)

    models: list[tuple[str, Path]] = []
    if not args.no_builtin:
        names = [*BUILDERS, *BENCH_BUILDERS, *(f"random_{i}" for i in range(args.random))]
        models += list(sample_models(names).items())
        for p in sorted(ROOT.glob("runs/*/export/*/model_int8.tflite")):
            models.append((f"{p.parts[-4]}/{p.parts[-2]}", p))
    models += [(p.stem, p) for p in args.files]

    entries = [bench_one(n, p) for n, p in models]
    ok = [e for e in entries if "error" not in e]
    summary = {
        "models": len(entries),
        "measured": len(ok),
        "failed_to_load": [e["name"] for e in entries if "error" in e],
        "greedy_equals_tflm_on_all": all(e["greedy_matches_tflm"] for e in ok),
        "greedy_mismatches": [e["name"] for e in ok if not e["greedy_matches_tflm"]],
        "optimized_le_tflm_on_all": all(e["optimized_head"] <= e["tflm"]["head"] for e in ok),
        "optimized_confirmed_on_all": all(
            e["optimized_confirmed_by_tflm"] == e["optimized_head"] for e in ok
        ),
        "optimized_lower_count": sum(e["optimized_head"] < e["tflm"]["head"] for e in ok),
        "total_tflm_head": sum(e["tflm"]["head"] for e in ok),
        "total_optimized_head": sum(e["optimized_head"] for e in ok),
        "mlperf_like_heads_match_reference": all(
            e["tflm"]["head"] == e["mlperf_reference_head"] for e in ok if "mlperf_reference_head" in e
        ),
    }
    import tflite_micro

    result = {
        "benchmark": "planner_vs_tflm",
        "tflite_micro_version": tflite_micro.__version__,
        "alignment": 16,
        "summary": summary,
        "models": entries,
    }
    atomic_write_json(args.out, result)
    _print(entries, summary)
    print(f"wrote {args.out}")
    return 0 if summary["greedy_equals_tflm_on_all"] and summary["optimized_le_tflm_on_all"] else 1


def _print(entries: list[dict[str, Any]], summary: dict[str, Any]) -> None:
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:  # pragma: no cover
        for e in entries:
            print(e)
        print(summary)
        return
    t = Table(title="TFLite Micro arena head: TFLM vs edgekd planners (bytes)")
    for col in (
        "model",
        "ops",
        "tflm head",
        "tail",
        "total",
        "greedy",
        "=",
        "optimized",
        "TFLM conf.",
        "saved",
        "how",
    ):
        t.add_column(col, justify="left" if col in ("model", "how") else "right")
    for e in entries:
        if "error" in e:
            t.add_row(e["name"], "", "[red]error[/red]", "", "", "", "", "", "", "", e["error"][:60])
            continue
        tf = e["tflm"]
        t.add_row(
            e["name"],
            str(e["num_operators"]),
            f"{tf['head']:,}",
            f"{tf['tail']:,}",
            f"{tf['total']:,}",
            f"{e['greedy_head']:,}",
            "[green]yes[/green]" if e["greedy_matches_tflm"] else "[red]NO[/red]",
            f"{e['optimized_head']:,}",
            f"{e['optimized_confirmed_by_tflm']:,}",
            f"{e['saving_pct']:.1f}%" if e["saving_bytes"] else "-",
            e["optimized_method"] if e["saving_bytes"] else "",
        )
    console = Console(width=max(Console().width, 150))
    console.print(t)
    console.print(summary)


if __name__ == "__main__":
    raise SystemExit(main())
