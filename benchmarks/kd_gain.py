"""Does distillation beat training alone? The KD-gain benchmark (issue 20), at three MCU student sizes.

For every data set and student size (about 2k, 10k and 50k parameters, depthwise-separable CNNs: MCU
ops only) the rows are: the student alone (same augmentation, same epochs), Hinton KD with consistent
teaching from K cached augmented views, DKD, DIST, and the best feature loss of the library (AT, PKT or a
FitNet hint, chosen on validation), beside the committed reference teacher (``benchmarks/teachers.py``).

Phases (each run is one JSON under ``benchmarks/results/kd_gain/<data>/``, so a killed or later session
continues where the last stopped; ``--budget-minutes`` stops launching runs after that time):

1. ``sweep``: first the schedule check ("alone" at twice the epochs, seed 0: converged when it gains less
   than 0.2 validation points), then seed 0 on the validation split, every configuration of every row at the sweep size
   (``10k``; ``2k`` for digits); the best configuration per row by validation accuracy, ties by validation loss (test never read for the choice).
2. ``final``: the chosen configuration of every row at every size, for every seed (3; 5 for digits).
   One data split (``data.split_seed: 0``) for all seeds: no seed's test examples are in the teacher's
   training split.
3. ``export``: the seed-0 students of each row through ``edgekd export --target tflite-micro``: int8
   TFLite Micro accuracy, flash and arena.
4. ``summary``: ``benchmarks/results/kd_gain.json`` (mean +- std, gain over alone +- std of the paired
   per-seed gains, fraction of the teacher-student gap closed, training seconds, cost ratio to alone,
   the convergence check of "alone", the goals and the pending runs) and ``docs/kd_gain.png``.

    python benchmarks/kd_gain.py --data digits                   # all phases
    python benchmarks/kd_gain.py --data mnist fashion-mnist --phase sweep final --budget-minutes 100
    python benchmarks/kd_gain.py --phase summary                  # tables and plot from what has run
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks._common import (
    REPO,
    RESULTS,
    RunStore,
    machine,
    mean_std,
    print_table,
    train_run,
    write_results,
)  # noqa: E402
from benchmarks.teachers import TEACHERS_DIR  # noqa: E402

OUT = RESULTS / "kd_gain"
RUNS = REPO / "runs" / "bench" / "kd_gain"
SIZES = {"2k": [12, 24, 32], "10k": [28, 56, 112], "50k": [40, 80, 160, 192]}

ROWS = ("alone", "kd", "dkd", "dist", "feature")

# Per data set: teacher, seeds, augmentation (the same for every row), schedule, K cached views, and
# where the feature losses tap (student path, teacher path).
DATA: dict[str, dict[str, Any]] = {
    "digits": {  # 144 validation images: 10k students reach 100%, so the choice is made at 2k
        "teacher": "digits", "sweep_size": "2k", "seeds": [0, 1, 2, 3, 4], "val_fraction": 0.1,
        "augment": [{"name": "translate", "params": {"max_shift": 1}}],
        "train": {"epochs": 60, "batch_size": 64, "lr": 0.05, "weight_decay": 5e-4}, "views": 32,
        "maps": ("features.1", "features.1"), "embedding": ("flatten", "flatten"),
    },
    "mnist": {
        "teacher": "mnist-cnn", "sweep_size": "10k", "seeds": [0, 1, 2], "val_fraction": 0.05,
        "augment": [{"name": "translate", "params": {"max_shift": 2}}],
        "train": {"epochs": 30, "batch_size": 128, "lr": 0.05, "weight_decay": 5e-4}, "views": 16,
        "maps": ("features.1", "features.1"), "embedding": ("flatten", "flatten"),
    },
    "fashion-mnist": {  # maps: the student's 7x7 stage against the VGG teacher's 7x7 stage
        "teacher": "fashion-mnist", "sweep_size": "10k", "seeds": [0, 1, 2], "val_fraction": 0.1,
        "augment": [{"name": "crop", "params": {"padding": 2}}, {"name": "hflip"}],
        "train": {"epochs": 30, "batch_size": 128, "lr": 0.05, "weight_decay": 5e-4}, "views": 16,
        "maps": ("features.2", "features.1"), "embedding": ("flatten", "flatten"),
    },
}  # fmt: skip


def grid(data: str) -> dict[str, list[dict[str, Any]]]:
    """Every configuration tried per row (a configuration is what changes the recipe)."""
    d = DATA[data]
    feats: list[dict[str, Any]] = [{"feature": "pkt", "weight": 1.0}]
    if d["maps"]:
        feats += [{"feature": "at", "weight": 100.0}, {"feature": "hint", "weight": 1.0}]
    grid = {
        "alone": [{"weight_decay": 5e-4}, {"weight_decay": 0.0}],
        "kd": [{"T": 4.0, "alpha": 0.9}, {"T": 8.0, "alpha": 0.9}, {"T": 4.0, "alpha": 0.5}, {"T": 2.0, "alpha": 0.9}],
        "dkd": [{"T": 4.0, "beta": 8.0}, {"T": 4.0, "beta": 2.0}],
        "dist": [{"T": 1.0, "beta": 1.0}, {"T": 4.0, "beta": 2.0}],
        "feature": feats,
    }  # fmt: skip
    return grid


def losses_for(data: str, row: str, cfg: dict[str, Any]) -> list[dict[str, Any]] | None:
    d = DATA[data]
    if row == "alone":
        return None
    if row == "kd":
        return [{"name": "ce", "weight": 1 - cfg["alpha"]},
                {"name": "kd", "weight": cfg["alpha"], "params": {"temperature": cfg["T"]}}]  # fmt: skip
    if row == "dkd":
        return [{"name": "ce", "weight": 1.0},
                {"name": "dkd", "weight": 1.0, "params": {"temperature": cfg["T"], "alpha": 1.0, "beta": cfg["beta"]}}]  # fmt: skip
    if row == "dist":
        b = cfg["beta"]
        return [{"name": "ce", "weight": 1.0},
                {"name": "dist", "weight": 1.0, "params": {"temperature": cfg["T"], "beta": b, "gamma": b}}]  # fmt: skip
    s_path, t_path = d["embedding"] if cfg["feature"] == "pkt" else d["maps"]
    return [{"name": "ce", "weight": 1.0},
            {"name": cfg["feature"], "weight": cfg["weight"], "student": s_path, "teacher": t_path}]  # fmt: skip


def key_of(data: str, size: str, row: str, cfg: dict[str, Any], seed: int) -> str:
    parts = "-".join(f"{k}{v:g}" if isinstance(v, float) else f"{k}{v}" for k, v in sorted(cfg.items()))
    return f"{size}-{row}-{parts}-s{seed}"


def recipe_dict(data: str, size: str, row: str, cfg: dict[str, Any], seed: int) -> dict[str, Any]:
    d = DATA[data]
    train = {**d["train"], "optimizer": "sgd", "momentum": 0.9, "schedule": "cosine", "threads": 1,
             "teacher_views": d["views"]}  # fmt: skip
    if row == "alone":
        train["weight_decay"] = cfg["weight_decay"]
    if "epochs" in cfg:
        train["epochs"] = cfg["epochs"]
    r: dict[str, Any] = {
        "name": key_of(data, size, row, cfg, seed),
        "seed": seed,
        "data": {"name": data, "val_fraction": d["val_fraction"], "split_seed": 0, "augment": d["augment"]},
        "model": {"name": "cnn", "kwargs": {"channels": SIZES[size], "depthwise": True}},
        "train": train,
    }
    losses = losses_for(data, row, cfg)
    if losses is not None:
        r["losses"] = losses
        r["teacher"] = {"path": str(TEACHERS_DIR / d["teacher"] / "model.pt")}
    return r


def convergence(history: list[dict[str, Any]]) -> dict[str, Any]:
    """How much validation accuracy still moved: the mean over the last tenth of the epochs against the
    mean over the tenth before the last fifth (points); converged when it moved less than 0.2 points."""
    val = [h["val_accuracy"] for h in history if "val_accuracy" in h]
    if len(val) < 10:
        return {"moved_points": None, "converged": None}
    n = len(val)
    tenth = max(1, n // 10)
    last = sum(val[-tenth:]) / tenth
    before = val[n - n // 5 - tenth : n - n // 5]
    moved = 100 * (last - sum(before) / len(before))
    return {"moved_points": round(moved, 3), "converged": abs(moved) < 0.2,
            "rule": "mean val accuracy of the last 10% of epochs vs the 10% before the last fifth, < 0.2 points"}  # fmt: skip


def store(data: str) -> RunStore:
    """The committed record of every finished run (and export) of data set ``data``."""
    return RunStore(OUT / data)


def run_one(data: str, size: str, row: str, cfg: dict[str, Any], seed: int, phase: str) -> dict[str, Any]:
    """Train one configuration (or read its record if it already ran) and record what it measured."""
    key = key_of(data, size, row, cfg, seed)
    return store(data).get_or_run(key, lambda: measure_run(data, size, row, cfg, seed, phase))


def measure_run(data: str, size: str, row: str, cfg: dict[str, Any], seed: int, phase: str) -> dict[str, Any]:
    from edgekd.recipe import recipe_from_dict

    key = key_of(data, size, row, cfg, seed)
    recipe = recipe_from_dict(recipe_dict(data, size, row, cfg, seed), key)
    folder, wall = train_run(recipe, RUNS / data, distill=row != "alone")
    metrics = json.loads((folder / "metrics.json").read_text())
    speed = json.loads((folder / "speed.json").read_text()) if (folder / "speed.json").exists() else {}
    history = metrics.get("history", [])
    cache = speed.get("teacher_cache")
    return {
        "data": data, "size": size, "row": row, "config": cfg, "seed": seed, "phase": phase, "key": key,
        "params": sum(p.numel() for p in _student(folder).parameters()),
        "epochs": len(history),
        "val_accuracy": history[-1].get("val_accuracy") if history else None,
        "val_loss": history[-1].get("val_loss") if history else None,
        "test_accuracy": metrics["final"].get("test_accuracy"),
        "test_errors": metrics["final"].get("test_errors"),
        "train_seconds": round(sum(h.get("seconds", 0.0) for h in history), 2),
        "cache_seconds": cache.get("seconds") if isinstance(cache, dict) else None,
        "wall_seconds": round(wall, 2),
        "teacher_cache": cache if not isinstance(cache, dict) else cache.get("events"),
        "teaching": speed.get("teaching"),
        "convergence": convergence(history),
        "val_curve": [round(h["val_accuracy"], 5) for h in history if "val_accuracy" in h],
        "recipe": recipe_dict(data, size, row, cfg, seed),
        "device": speed.get("device", "cpu"),
        "machine": machine(),
    }  # fmt: skip


def _student(root: Path):
    from edgekd.models import load_model

    p = root / "student.pt" if (root / "student.pt").exists() else root / "model.pt"
    return load_model(p)[0]


def best(results: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the highest validation accuracy; ties (a small validation set) by the lower val loss."""
    return max(results, key=lambda r: (r["val_accuracy"], -r["val_loss"]))


class Budget:
    def __init__(self, minutes: float | None) -> None:
        self.deadline = time.time() + 60 * minutes if minutes else None

    def left(self) -> bool:
        return self.deadline is None or time.time() < self.deadline


def probe_config(data: str) -> dict[str, Any]:
    """The schedule check: "alone" (its first configuration) at twice the data set's epochs."""
    return {**grid(data)["alone"][0], "epochs": 2 * DATA[data]["train"]["epochs"]}


def schedule_check(data: str, runs: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Has "alone" converged at the benchmark's epochs? Its seed-0 validation accuracy at twice the epochs
    (a cosine schedule always moves in its last fifth, so the fair test is a longer schedule)."""
    size = DATA[data]["sweep_size"]
    by_key = {r["key"]: r for r in runs}
    base = by_key.get(key_of(data, size, "alone", grid(data)["alone"][0], 0))
    longer = by_key.get(key_of(data, size, "alone", probe_config(data), 0))
    if base is None or longer is None:
        return None
    moved = 100 * (longer["val_accuracy"] - base["val_accuracy"])
    return {"size": size, "epochs": base["epochs"], "val_accuracy": base["val_accuracy"],
            "val_accuracy_at_twice_the_epochs": longer["val_accuracy"], "moved_points": round(moved, 3),
            "converged": moved < 0.2, "rule": "alone at 2x the epochs gains < 0.2 validation points"}  # fmt: skip


def sweep(data: str, budget: Budget) -> dict[str, Any] | None:
    """Seed-0 validation runs of every configuration at the sweep size, after the schedule check of
    "alone" at twice the epochs; None until all have run."""
    chosen = {}
    size = DATA[data]["sweep_size"]
    probe = probe_config(data)
    if key_of(data, size, "alone", probe, 0) not in store(data) and not budget.left():
        return None
    r = run_one(data, size, "alone", probe, 0, "probe")
    print(
        f"{data} schedule check, alone at {probe['epochs']} epochs: val {r['val_accuracy']:.4f}", flush=True
    )
    for row, cfgs in grid(data).items():
        results = []
        for cfg in cfgs:
            if key_of(data, size, row, cfg, 0) not in store(data) and not budget.left():
                return None
            results.append(run_one(data, size, row, cfg, 0, "sweep"))
            print(f"{data} sweep {row} {cfg}: val {results[-1]['val_accuracy']:.4f}", flush=True)
        chosen[row] = best(results)["config"]
    return chosen


def final(data: str, chosen: dict[str, Any], budget: Budget) -> list[str]:
    """Every seed of every chosen row at every size; returns the runs still pending."""
    pending = []
    for seed in DATA[data]["seeds"]:  # seed by seed: every seed finished adds a full column of the table
        for size in SIZES:
            for row in ROWS:
                key = key_of(data, size, row, chosen[row], seed)
                if key in store(data):
                    continue
                if not budget.left():
                    pending.append(key)
                    continue
                r = run_one(data, size, row, chosen[row], seed, "final")
                print(f"{data} final {key}: test {r['test_accuracy']:.4f}", flush=True)
    return pending


def export_one(data: str, size: str, row: str, cfg: dict[str, Any]) -> dict[str, Any]:
    """int8 TFLite Micro accuracy, flash and arena of the seed-0 student (retrained if its folder is gone)."""
    key = key_of(data, size, row, cfg, 0)
    return store(data).get_or_run(f"export-{key}", lambda: {"key": key, "export": measure_export(data, key, size,
                                                                                                 row, cfg)})  # fmt: skip


def measure_export(data: str, key: str, size: str, row: str, cfg: dict[str, Any]) -> dict[str, Any]:
    from edgekd.export import export_run

    folder = RUNS / data / key
    if not ((folder / "student.pt").exists() or (folder / "model.pt").exists()):
        store(data).path(key).unlink(missing_ok=True)
        run_one(data, size, row, cfg, 0, "final")
    out = export_run(str(folder), target="tflite-micro", quiet=True)
    return json.loads((Path(out) / "export.json").read_text())


def load_all(data: str) -> list[dict[str, Any]]:
    return [
        json.loads(p.read_text())
        for p in sorted((OUT / data).glob("*.json"))
        if not p.name.startswith("export-")
    ]


def summarise(datas: list[str]) -> dict[str, Any]:
    summary: dict[str, Any] = {"benchmark": "kd_gain", "sizes": SIZES, "rows": list(ROWS), "data": {}}
    complete = True
    for data in datas:
        runs = load_all(data)
        if not runs:
            summary["data"][data] = {"complete": False, "pending": "everything (no run yet)"}
            complete = False
            continue
        chosen = choose(data, runs)
        teacher = json.loads((TEACHERS_DIR / DATA[data]["teacher"] / "teacher.json").read_text())
        entry: dict[str, Any] = {"teacher": {"name": DATA[data]["teacher"], "test_accuracy": teacher["test_accuracy"]},
                                 "chosen": chosen, "schedule_check": schedule_check(data, runs),
                                 "sweep": sweep_table(data, runs), "sizes": {}}  # fmt: skip
        pending = []
        for size in SIZES:
            table, missing = size_table(data, size, chosen, runs, teacher["test_accuracy"])
            entry["sizes"][size] = table
            pending += missing
        if entry["schedule_check"] is None:
            pending.append(f"{data} schedule check (alone at {probe_config(data)['epochs']} epochs)")
        entry["pending"] = list(dict.fromkeys(pending))
        entry["complete"] = chosen is not None and not pending
        complete &= entry["complete"]
        summary["data"][data] = entry
    summary["complete"] = complete
    summary["goals"] = goals(summary)
    summary["machine"] = machine()
    return summary


def choose(data: str, runs: list[dict[str, Any]]) -> dict[str, Any] | None:
    by_key = {r["key"]: r for r in runs}
    chosen = {}
    for row, cfgs in grid(data).items():
        done = [by_key.get(key_of(data, DATA[data]["sweep_size"], row, c, 0)) for c in cfgs]
        if any(d is None for d in done):
            return None
        chosen[row] = best(done)["config"]
    return chosen


def sweep_table(data: str, runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"row": r["row"], "config": r["config"], "val_accuracy": r["val_accuracy"], "split": "validation"}
            for r in runs if r["phase"] == "sweep"]  # fmt: skip


def size_table(data: str, size: str, chosen: dict[str, Any] | None, runs: list[dict[str, Any]],
               teacher_acc: float) -> tuple[dict[str, Any], list[str]]:  # fmt: skip
    if chosen is None:
        return {"pending": "the sweep"}, [f"{data} sweep"]
    by_key = {r["key"]: r for r in runs}
    seeds = DATA[data]["seeds"]
    per_row = {row: {s: by_key.get(key_of(data, size, row, chosen[row], s)) for s in seeds} for row in ROWS}
    missing = [
        key_of(data, size, row, chosen[row], s) for row in ROWS for s in seeds if per_row[row][s] is None
    ]
    missing += [f"export-{key_of(data, size, row, chosen[row], 0)}" for row in ROWS
                if f"export-{key_of(data, size, row, chosen[row], 0)}" not in store(data)]  # fmt: skip
    alone = per_row["alone"]
    table: dict[str, Any] = {}
    for row in ROWS:
        done = {s: r for s, r in per_row[row].items() if r is not None}
        accs = [100 * r["test_accuracy"] for r in done.values()]
        gains = [100 * (r["test_accuracy"] - alone[s]["test_accuracy"]) for s, r in done.items() if alone[s]]
        m, sd = mean_std(accs)
        g, gsd = mean_std(gains)
        a_m = mean_std([100 * alone[s]["test_accuracy"] for s in done if alone[s]])[0]
        gap = 100 * teacher_acc - a_m
        secs = [r["train_seconds"] for r in done.values()]
        a_secs = [alone[s]["train_seconds"] for s in done if alone[s]]
        export = store(data).get(f"export-{key_of(data, size, row, chosen[row], 0)}")
        table[row] = {
            "config": chosen[row], "seeds": sorted(done), "test_accuracy": [m, sd],
            "val_accuracy": mean_std([100 * r["val_accuracy"] for r in done.values()]),
            "gain_over_alone": [g, gsd] if row != "alone" else None,
            "beats_alone_beyond_spread": (g > gsd and g > 0) if row != "alone" and len(gains) > 1 else None,
            "gap_closed": (g / gap if gap > 0 else None) if row != "alone" else None,
            "train_seconds": mean_std(secs)[0],
            "cache_seconds": mean_std([r["cache_seconds"] for r in done.values() if r.get("cache_seconds")])[0],
            "cost_ratio_to_alone": (sum(secs) / sum(a_secs)) if a_secs and row != "alone" else None,
            "params": next(iter(done.values()))["params"] if done else None,
            "convergence": [r["convergence"] for r in done.values()] if row == "alone" else None,
            "int8": int8_summary(export["export"]) if export else None,
        }  # fmt: skip
    return table, missing


def int8_summary(export: dict[str, Any]) -> dict[str, Any]:
    """The seed-0 student on TFLite Micro: int8 test accuracy beside its float one, flash and arena."""
    checks = export["checks"]
    return {"float_accuracy": checks["float_accuracy"], "int8_accuracy": checks["int8_accuracy"],
            "runtime": checks["int8_runtime"], "flash_bytes": export["tflite"]["int8"]["bytes"],
            "arena_bytes": export["micro"]["arena"]["tflm"]["total"]}  # fmt: skip


def goals(summary: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for data, entry in summary["data"].items():
        sizes = entry.get("sizes") or {}
        beats, closed = {}, None
        for size, table in sizes.items():
            if "alone" not in table:
                continue
            # the logit row a user would pick: the best mean validation accuracy (test is never read)
            best = max(
                (r for r in ROWS if r not in ("alone", "feature")), key=lambda r: table[r]["val_accuracy"][0]
            )
            beats[size] = {
                "best_logit_row": best,
                "beats_beyond_spread": table[best]["beats_alone_beyond_spread"],
            }
            if size == "50k":
                closed = table[best]["gap_closed"]
        out[data] = {"kd_beats_alone_at_every_size": beats, "gap_closed_at_50k": closed,
                     "goal_gap_closed_at_least": 0.5}  # fmt: skip
    if "sizes" in summary["data"].get("digits", {}):
        out["digits"]["demo"] = demo_goal(summary["data"]["digits"])
    return out


def demo_row() -> tuple[str, str, dict[str, Any]] | None:
    """The (size, row, config) of the digits benchmark that ``examples/demo.yaml`` is, or None."""
    from edgekd.recipe import load_recipe

    demo = load_recipe(REPO / "examples" / "demo.yaml").to_dict()
    for size in SIZES:
        for row, cfgs in grid("digits").items():
            for cfg in cfgs:
                r = recipe_dict("digits", size, row, cfg, demo["seed"])
                if same_training(demo, r):
                    return size, row, cfg
    return None


def same_training(demo: dict[str, Any], bench: dict[str, Any]) -> bool:
    """The demo trains its distilled student exactly as the benchmark row does (model, data, schedule, losses)."""
    keys = (
        "epochs",
        "batch_size",
        "lr",
        "weight_decay",
        "optimizer",
        "momentum",
        "schedule",
        "teacher_views",
    )
    b_losses = bench.get("losses", [])
    d_losses = [{k: v for k, v in loss.items() if k in ("name", "weight", "params", "student", "teacher") and v}
                for loss in demo.get("losses", [])]  # fmt: skip
    return (
        demo["model"]["name"] == bench["model"]["name"]
        and demo["model"]["kwargs"] == bench["model"]["kwargs"]
        and all(
            demo["data"].get(k) == bench["data"][k] for k in ("name", "val_fraction", "split_seed", "augment")
        )
        and all(demo["train"].get(k) == bench["train"][k] for k in keys)
        and d_losses == b_losses
        and bool(b_losses)
    )


def demo_goal(entry: dict[str, Any]) -> dict[str, Any]:
    """The digits demo's 5-seed figure: its benchmark row against "alone" at the same size."""
    found = demo_row()
    if found is None:
        return {"met": None, "why": "examples/demo.yaml is not one of the benchmark's digits rows"}
    size, row, cfg = found
    t = entry["sizes"][size][row]
    if entry["chosen"][row] != cfg:
        return {
            "met": None,
            "why": f"examples/demo.yaml uses {row} {cfg}; validation chose {entry['chosen'][row]}",
        }
    return {"size": size, "row": row, "seeds": t["seeds"], "gain_over_alone": t["gain_over_alone"],
            "met": t["beats_alone_beyond_spread"], "rule": "mean paired gain > its std over the seeds"}  # fmt: skip


def print_summary(summary: dict[str, Any]) -> None:
    for data, entry in summary["data"].items():
        for size, table in (entry.get("sizes") or {}).items():
            if "alone" not in table:
                continue
            rows = []
            for row in ROWS:
                t = table[row]
                m, sd = t["test_accuracy"]
                g = t["gain_over_alone"]
                rows.append([row, f"{m:.2f} ± {sd:.2f}", f"{g[0]:+.2f} ± {g[1]:.2f}" if g else "",
                             f"{t['gap_closed']:.0%}" if t["gap_closed"] is not None else "",
                             f"{t['train_seconds']:.0f}", f"{t['cost_ratio_to_alone']:.2f}" if t["cost_ratio_to_alone"] else "",
                             len(t["seeds"]), int8_cell(t["int8"])])  # fmt: skip
            teacher = entry["teacher"]["test_accuracy"] * 100
            print_table(f"{data} {size} (teacher {teacher:.2f}%)",
                        ["row", "test %", "gain", "gap closed", "train s", "cost x", "seeds", "int8 s0 (flash, arena)"],
                        rows)  # fmt: skip


def int8_cell(i: dict[str, Any] | None) -> str:
    if not i:
        return ""
    return (
        f"{100 * i['int8_accuracy']:.2f} ({i['flash_bytes'] / 1024:.1f}, {i['arena_bytes'] / 1024:.1f} KiB)"
    )


def plot(summary: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datas = [d for d, e in summary["data"].items() if e.get("sizes")]
    if not datas:
        return
    fig, axes = plt.subplots(1, len(datas), figsize=(4.5 * len(datas), 3.6), squeeze=False)
    for ax, data in zip(axes[0], datas):
        sizes = [s for s, t in summary["data"][data]["sizes"].items() if "alone" in t]
        for k, row in enumerate(r for r in ROWS if r != "alone"):
            g = [summary["data"][data]["sizes"][s][row]["gain_over_alone"] for s in sizes]
            xs = [i + (k - 1.5) * 0.18 for i in range(len(sizes))]
            ax.errorbar(xs, [v[0] for v in g], yerr=[v[1] for v in g], fmt="o", capsize=3, label=row)
        ax.axhline(0, color="grey", lw=0.8)
        ax.set_xticks(range(len(sizes)), sizes)
        ax.set_title(data)
        ax.set_xlabel("student size (parameters)")
        ax.set_ylabel("test accuracy gain over alone (points)")
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", nargs="+", default=list(DATA), choices=list(DATA))
    ap.add_argument("--phase", nargs="+", default=["sweep", "final", "export", "summary"],
                    choices=["sweep", "final", "export", "summary"])  # fmt: skip
    ap.add_argument("--budget-minutes", type=float, default=None, help="Launch no new run after this long.")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    budget = Budget(args.budget_minutes)
    for data in args.data:
        if not (TEACHERS_DIR / DATA[data]["teacher"] / "model.pt").exists():
            print(
                f"{data}: reference teacher {DATA[data]['teacher']!r} not committed yet; skipped", flush=True
            )
            continue
        chosen = sweep(data, budget) if {"sweep", "final", "export"} & set(args.phase) else None
        if chosen is None:
            continue
        if "final" in args.phase:
            final(data, chosen, budget)
        if "export" in args.phase and budget.left():
            for size in SIZES:
                for row in ROWS:
                    if key_of(data, size, row, chosen[row], 0) in store(data) and budget.left():
                        export_one(data, size, row, chosen[row])
    summary = summarise(list(DATA))
    write_results("kd_gain", summary)
    print_summary(summary)
    plot(summary, REPO / "docs" / "kd_gain.png")
    print(f"complete: {summary['complete']}; results in {RESULTS / 'kd_gain.json'}")


if __name__ == "__main__":
    main()
