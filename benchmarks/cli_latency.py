"""Start-up latency of the command line: ``edgekd --help``, a recipe error and ``edgekd targets``.

Each command runs in a fresh process (median of ``--repeats``, default 5) through the installed console
script, the way a user meets it. Side by side in the same run, a bare ``python -c pass`` and
``python -c "import torch"`` give the floor and what importing torch alone would cost, so the figures
can be read as ratios on a noisy shared machine. Goal (issue 8): help and a recipe error under 1 s.

    python benchmarks/cli_latency.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, print_table, write_results  # noqa: E402


def _time(argv: list[str], repeats: int, expect: int) -> dict:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = subprocess.run(argv, capture_output=True, text=True)
        times.append(time.perf_counter() - t0)
        if out.returncode != expect:
            raise SystemExit(f"{argv}: exit {out.returncode}, expected {expect}: {out.stderr[-300:]}")
    return {"median_s": round(statistics.median(times), 4), "min_s": round(min(times), 4),
            "runs_s": [round(t, 4) for t in times]}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    exe = shutil.which("edgekd") or str(Path(sys.executable).parent / "edgekd")
    with tempfile.TemporaryDirectory() as d:
        bad = Path(d) / "bad.yaml"
        bad.write_text("trian:\n  epochs: 3\n")
        cases = {
            "python -c pass (floor)": ([sys.executable, "-c", "pass"], 0),
            "python -c 'import torch' (reference)": ([sys.executable, "-c", "import torch"], 0),
            "edgekd --help": ([exe, "--help"], 0),
            "edgekd train bad.yaml (recipe error)": ([exe, "train", str(bad)], 2),
            "edgekd targets": ([exe, "targets"], 0),
        }
        results = {name: _time(argv, args.repeats, code) for name, (argv, code) in cases.items()}
    torch_s = results["python -c 'import torch' (reference)"]["median_s"]
    rows = []
    for name, r in results.items():
        r["ratio_to_import_torch"] = round(r["median_s"] / torch_s, 3)
        rows.append([name, f"{r['median_s']:.3f}", f"{r['ratio_to_import_torch']:.2f}"])
    goal = all(
        results[k]["median_s"] < 1.0 for k in ("edgekd --help", "edgekd train bad.yaml (recipe error)")
    )
    write_results("cli_latency", {"benchmark": "cli_latency", "repeats": args.repeats, "results": results,
                                  "goal_under_1s_met": goal, "machine": machine()})  # fmt: skip
    print_table(
        f"CLI start-up, median of {args.repeats} fresh processes",
        ["command", "seconds", "x import torch"],
        rows,
    )
    print(f"goal (help and recipe error < 1 s): {'met' if goal else 'NOT met'}")


if __name__ == "__main__":
    main()
