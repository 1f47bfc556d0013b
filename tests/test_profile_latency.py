"""edgekd.profile.latency: statistics on a known sleep, and the MCU estimate formula."""

from __future__ import annotations

import time

import numpy as np
import pytest

from edgekd.profile.latency import latency_stats, mcu_latency_estimate, summarize_ms


def test_latency_stats_on_known_sleep() -> None:
    calls = []

    def fn() -> None:
        calls.append(1)
        time.sleep(0.005)

    t0 = time.perf_counter()
    s = latency_stats(fn, warmup=2, runs=20)
    wall_ms = (time.perf_counter() - t0) * 1e3
    assert len(calls) == 22 and s["runs"] == 20 and s["warmup"] == 2 and s["batch"] == 1
    assert s["min_ms"] >= 5.0  # sleep never returns early
    # the 20 timed calls fit in the wall time of all 22 (in ms, not another unit); no upper bound on one
    # call's latency: a loaded machine may delay any sleep
    assert 20 * 5.0 <= 20 * s["mean_ms"] <= wall_ms
    assert s["min_ms"] <= s["p50_ms"] <= s["p90_ms"] <= s["p99_ms"] <= s["max_ms"]
    assert s["std_ms"] >= 0


def test_summary_statistics_by_hand() -> None:
    s = summarize_ms(np.array([1.0, 2.0, 3.0, 4.0, 100.0]))
    assert s["p50_ms"] == 3.0
    assert s["mean_ms"] == pytest.approx(22.0)
    assert s["std_ms"] == pytest.approx(np.std([1, 2, 3, 4, 100], ddof=1))
    assert s["p90_ms"] == pytest.approx(4 + 0.6 * 96)  # linear interpolation between 4 and 100
    assert s["min_ms"] == 1.0 and s["max_ms"] == 100.0


def test_latency_stats_rejects_zero_runs() -> None:
    with pytest.raises(ValueError):
        latency_stats(lambda: None, runs=0)


def test_mcu_estimate() -> None:
    e = mcu_latency_estimate(1_000_000, clock_hz=100e6, cycles_per_mac=2.0)
    assert e["estimate"] is True and e["latency_ms"] == pytest.approx(20.0)
    with pytest.raises(ValueError):
        mcu_latency_estimate(10, clock_hz=0, cycles_per_mac=1)
