"""Latency: timing statistics of a callable, and the (labelled) MCU latency estimate from MACs."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np


def latency_stats(fn: Callable[[], Any], warmup: int = 5, runs: int = 50) -> dict[str, float | int]:
    """Call ``fn`` ``warmup`` times untimed, then ``runs`` times timed (``perf_counter_ns``).

    Returns milliseconds: ``p50_ms``, ``p90_ms``, ``p99_ms``, ``mean_ms``, ``std_ms``, ``min_ms``,
    ``max_ms`` and the counts used.
    """
    if runs < 1:
        raise ValueError(f"runs must be >= 1, not {runs}")
    for _ in range(max(0, warmup)):
        fn()
    times = np.empty(runs, dtype=np.float64)
    for i in range(runs):
        t0 = time.perf_counter_ns()
        fn()
        times[i] = (time.perf_counter_ns() - t0) / 1e6
    return summarize_ms(times, warmup=max(0, warmup))


def summarize_ms(times_ms: np.ndarray, warmup: int = 0) -> dict[str, float | int]:
    """Percentiles (linear interpolation), mean and standard deviation of a list of times in ms."""
    t = np.asarray(times_ms, dtype=np.float64)
    p50, p90, p99 = np.percentile(t, [50, 90, 99])
    return {
        "p50_ms": float(p50),
        "p90_ms": float(p90),
        "p99_ms": float(p99),
        "mean_ms": float(t.mean()),
        "std_ms": float(t.std(ddof=1)) if len(t) > 1 else 0.0,
        "min_ms": float(t.min()),
        "max_ms": float(t.max()),
        "runs": int(len(t)),
        "warmup": int(warmup),
        "batch": 1,
    }


def mcu_latency_estimate(macs: int, clock_hz: float, cycles_per_mac: float) -> dict[str, Any]:
    """An *estimate* of on-device latency: ``macs * cycles_per_mac / clock_hz``.

    It ignores memory stalls, non-MAC operators and kernel overheads; measure on the board
    (``edgekd bench``) for real numbers.
    """
    if clock_hz <= 0 or cycles_per_mac <= 0:
        raise ValueError("clock_hz and cycles_per_mac must be positive")
    ms = float(macs) * float(cycles_per_mac) / float(clock_hz) * 1e3
    return {
        "estimate": True,
        "latency_ms": ms,
        "macs": int(macs),
        "clock_hz": float(clock_hz),
        "cycles_per_mac": float(cycles_per_mac),
        "formula": "macs * cycles_per_mac / clock_hz",
    }
