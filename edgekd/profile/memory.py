"""Memory: flash (file size), peak host RSS while loading and running a model, and the TFLite Micro
arena of int8 ``.tflite`` files (measured with ``tflite-micro`` and planned with edgekd's planners)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from edgekd.errors import error_line

RSS_METHOD_HWM = "in-process VmHWM after resetting it via /proc/self/clear_refs (Linux)"
RSS_METHOD_DELTA = "in-process psutil RSS after minus before (no peak reset available)"


def flash_bytes(path: str | Path) -> int:
    """Bytes the model occupies in flash: the size of the model file."""
    return Path(path).stat().st_size


def _status_kb(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def measure_peak_rss(fn: Callable[[], Any]) -> tuple[Any, dict[str, Any]]:
    """Run ``fn`` and report the process's peak resident memory during it.

    On Linux the kernel's high-water mark (VmHWM) is reset to the current RSS first, so ``peak_bytes``
    is the true peak during ``fn`` and ``delta_bytes`` the growth over the RSS just before. The number
    includes everything the process holds (interpreter, libraries already imported), so compare
    deltas, not peaks, between runtimes. Elsewhere it falls back to a psutil before/after delta.
    """
    import psutil

    proc = psutil.Process()
    before = proc.memory_info().rss
    if _reset_peak() and _status_kb("VmHWM") is not None:
        base = _status_kb("VmRSS") or before
        result = fn()
        peak = _status_kb("VmHWM") or proc.memory_info().rss
        return result, {"peak_bytes": peak, "delta_bytes": max(0, peak - base), "baseline_bytes": base,
                        "method": RSS_METHOD_HWM}  # fmt: skip
    result = fn()
    after = proc.memory_info().rss
    return result, {"peak_bytes": after, "delta_bytes": max(0, after - before), "baseline_bytes": before,
                    "method": RSS_METHOD_DELTA}  # fmt: skip


def _plan_dict(plan: Any, op_names: list[str]) -> dict[str, Any]:
    """A planner :class:`~edgekd.graph.planner.Plan` as JSON: head, order, method and live bytes per
    operator position (labelled ``position:OPNAME`` of the operator run there)."""
    d = (
        plan.to_dict()
        if hasattr(plan, "to_dict")
        else {"head": plan.head, "order": plan.order, "timeline": plan.timeline}
    )
    order = [int(i) for i in d.get("order") or range(len(op_names))]
    timeline = [
        {"op": int(order[k]) if k < len(order) else k,
         "label": f"{k}:{op_names[order[k]]}" if k < len(order) and order[k] < len(op_names) else str(k),
         "live_bytes": int(v)}
        for k, v in enumerate(d.get("timeline") or [])
    ]  # fmt: skip
    return {"head": int(d["head"]), "order": order, "method": d.get("method"), "timeline": timeline,
            "peak_live": d.get("peak_live")}  # fmt: skip


def tflite_arena(model_content: bytes) -> dict[str, Any]:
    """TFLite Micro arena of a full-integer model.

    ``tflm``: head/tail/total measured by the host TFLite Micro interpreter; ``greedy_head``:
    edgekd's re-implementation of TFLM's greedy planner; ``optimized_head`` with the operator
    ``order`` it found; ``timeline``: live bytes per operator under the optimized (else greedy) plan.
    Parts that fail are listed in ``errors`` and left ``None``.
    """
    arena: dict[str, Any] = {"tflm": None, "greedy_head": None, "optimized_head": None, "order": None,
                             "timeline": None, "errors": []}  # fmt: skip
    try:
        from edgekd.graph.tflm import measure_arena

        arena["tflm"] = {
            k: int(v) for k, v in measure_arena(model_content).items() if k in ("head", "tail", "total")
        }
    except Exception as e:  # noqa: BLE001  (one failing part must not hide the others)
        arena["errors"].append(f"tflm: {error_line(e, 200)}")
    try:
        from edgekd.graph import read_tflite
        from edgekd.graph.planner import greedy_plan, optimized_plan

        g = read_tflite(model_content)
        names = [op.name for op in g.operators]
        greedy = _plan_dict(greedy_plan(g), names)
        arena["greedy_head"] = greedy["head"]
        arena["greedy_timeline"] = greedy["timeline"]
        arena["timeline"] = greedy["timeline"]
        arena["timeline_plan"] = "greedy"
        try:
            opt = _plan_dict(optimized_plan(g), names)
            arena["optimized_head"] = opt["head"]
            arena["optimized_method"] = opt["method"]
            arena["order"] = opt["order"]
            arena["timeline"] = opt["timeline"]
            arena["timeline_plan"] = "optimized"
        except Exception as e:  # noqa: BLE001
            arena["errors"].append(f"optimized planner: {error_line(e, 200)}")
    except Exception as e:  # noqa: BLE001
        arena["errors"].append(f"planner: {error_line(e, 200)}")
    return arena


def ram_needed(arena: dict[str, Any] | None) -> int | None:
    """RAM a board needs for the model: the measured TFLM arena total (else the planned head)."""
    if not arena:
        return None
    if arena.get("tflm"):
        return int(arena["tflm"]["total"])
    for k in ("optimized_head", "greedy_head"):
        if arena.get(k) is not None:
            return int(arena[k])
    return None


__all__ = ["flash_bytes", "measure_peak_rss", "ram_needed", "tflite_arena"]


RSS_METHOD_SUBPROCESS = (
    "fresh subprocess: peak RSS (ru_maxrss) of a Python process that imports the runtime, loads the model "
    "and runs one batch-1 inference; delta = growth over the process before loading"
)


def subprocess_peak_rss(
    runtime: str, path: str | Path, threads: int = 1, timeout_s: float = 300
) -> dict[str, Any]:
    """Peak RSS of a fresh ``python -m edgekd.profile.memory RUNTIME PATH THREADS`` process."""
    import json
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-m", "edgekd.profile.memory", runtime, str(path), str(int(threads))],
        capture_output=True, text=True, timeout=timeout_s,
    )  # fmt: skip
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1][:200]
        raise RuntimeError(f"RSS subprocess failed for {path} on {runtime}: {tail}")
    return {**json.loads(lines[-1]), "method": RSS_METHOD_SUBPROCESS}


def _child(argv: list[str]) -> None:
    """Subprocess entry point: load, run one inference, print peak/baseline RSS as JSON."""
    import json
    import resource

    import numpy as np

    from edgekd.native_io import redirect_fds
    from edgekd.runtimes import RUNTIMES

    runtime, path, threads = argv[0], argv[1], int(argv[2])
    base = _status_kb("VmRSS") or 0
    with redirect_fds(fds=(1,)):
        rt = RUNTIMES[runtime](path, threads=threads)
        rt.load()
        x = np.random.default_rng(0).standard_normal(rt.input_shape).astype(np.float32)
        rt.runner(x)()
    peak = _status_kb("VmHWM") or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(
        json.dumps(
            {"peak_bytes": int(peak), "baseline_bytes": int(base), "delta_bytes": int(max(0, peak - base))}
        )
    )


if __name__ == "__main__":  # pragma: no cover  (run by subprocess_peak_rss)
    import sys

    _child(sys.argv[1:])
