"""benchmarks/kd_gain.py's bookkeeping: the demo is one of its rows, the convergence rule, the choice."""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks import kd_gain  # noqa: E402


def test_the_digits_demo_is_a_benchmark_row():
    """`make demo` trains exactly what the benchmark measured over 5 seeds (else its figure is not the demo's)."""
    size, row, cfg = kd_gain.demo_row()
    assert row != "alone" and size in kd_gain.SIZES and cfg in kd_gain.grid("digits")[row]


def test_a_changed_demo_is_no_longer_a_row():
    from edgekd.recipe import load_recipe

    demo = load_recipe(REPO / "examples" / "demo.yaml").to_dict()
    size, row, cfg = kd_gain.demo_row()
    bench = kd_gain.recipe_dict("digits", size, row, cfg, 0)
    assert kd_gain.same_training(demo, bench)
    demo["train"]["epochs"] += 1
    assert not kd_gain.same_training(demo, bench)


def test_convergence_rule_reads_the_last_fifth():
    flat = [{"val_accuracy": 0.9} for _ in range(50)]
    assert kd_gain.convergence(flat)["converged"] is True
    rising = [{"val_accuracy": 0.5 + 0.01 * i} for i in range(50)]
    moved = kd_gain.convergence(rising)
    assert moved["converged"] is False and abs(moved["moved_points"] - 10.0) < 1e-6  # 10 epochs x 1 point


def test_choice_is_made_on_validation_never_test():
    runs = [
        {"val_accuracy": 0.95, "val_loss": 0.2, "test_accuracy": 0.99, "config": {"T": 2.0}},
        {"val_accuracy": 0.97, "val_loss": 0.3, "test_accuracy": 0.90, "config": {"T": 4.0}},
        {"val_accuracy": 0.97, "val_loss": 0.1, "test_accuracy": 0.80, "config": {"T": 8.0}},
    ]
    assert kd_gain.best(runs)["config"] == {"T": 8.0}  # best val accuracy, ties by val loss
