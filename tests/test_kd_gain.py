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


def test_schedule_check_runs_alone_at_twice_the_epochs():
    cfg = kd_gain.probe_config("mnist")
    assert cfg["epochs"] == 2 * kd_gain.DATA["mnist"]["train"]["epochs"]
    assert cfg not in kd_gain.grid("mnist")["alone"]  # never a candidate of the choice
    size = kd_gain.DATA["mnist"]["sweep_size"]
    base = kd_gain.grid("mnist")["alone"][0]
    runs = [
        {"key": kd_gain.key_of("mnist", size, "alone", base, 0), "epochs": 30, "val_accuracy": 0.9820},
        {"key": kd_gain.key_of("mnist", size, "alone", cfg, 0), "epochs": 60, "val_accuracy": 0.9853},
    ]
    check = kd_gain.schedule_check("mnist", runs)
    assert check["converged"] is False and abs(check["moved_points"] - 0.33) < 1e-9
    assert kd_gain.schedule_check("mnist", runs[:1]) is None
