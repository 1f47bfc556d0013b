"""SMD anomaly detection on the distillation engine: teacher, KD, noisy Born-Again generations, MCU students.

    python benchmarks/smd_sequential.py [--machines machine-1-6 ...] [--data-dir DIR] [--epochs 8]
                                        [--length 32] [--stride 8] [--test-stride 4] [--seeds 0 1]

Every network is an ordinary edgekd run (``edgekd.distill.runner.run_training`` with a recipe; the
recipes are in the JSON), trained on each machine alone (as the seed does):

* ``teacher lstm-ae``: LSTM autoencoder (hidden 64, latent 32), plain reconstruction.
* ``small lstm-ae alone`` / ``small lstm-ae KD``: hidden 16, latent 8, on ``recon-mse`` alone, and
  ``0.5 recon-mse + 0.5 output-mse`` against the teacher's reconstruction.
* ``gen k noisy`` / ``gen k no noise`` (k = 1..3): ``method: noisy-sequential`` (a = 0.5, noise
  N(0, 0.05^2) on a fraction p = 0.5 of each batch, p = 0 without noise) under
  ``scheme: born-again`` (3 generations, ``ensemble: true``): generation 1 learns from the teacher,
  generation 2 from generation 1, generation 3 from the mean reconstruction of generations 1-2.
  ``ensemble 1-2`` / ``ensemble 1-3``: the mean reconstruction of those generations as the scorer.
* ``fc-ae`` / ``conv1d-ae`` (MCU students): distilled (``0.5 recon-mse + 0.5 output-mse``) from the
  best of {teacher, generations, ensembles} of that machine, picked by the point-wise best-F1 on the
  test labels (optimistic, as the seed's choice is); ``fc-ae alone`` for comparison. Both KD students
  are exported to int8 TFLite Micro (``export_run``); their int8 rows run the ``.tflite`` on the host
  TFLite Micro interpreter; ``flash_bytes`` = the flatbuffer, ``arena_bytes`` = the measured arena.
* privileged sensors: ``fc-ae`` on 10 of the 38 metrics (every 4th column) alone, and the same student
  distilled from the 38-metric teacher (``teacher: {input: all_metrics}``, ``sensor-mse``: the
  teacher's reconstruction of the student's 10 metrics), both scored on their 10 metrics.

Sized for a loaded 2-core machine (about 25 minutes for 4 machines x 2 seeds): 8 epochs, training
stride 8 (every window position is not used), test stride 4 (a step's score averages the 8 windows
covering it), one model per machine and seed, 4 machines instead of the seed's 28, no tuning of
a, p or sigma. ``--stride 1 --test-stride 1 --epochs 30`` is closer to the seed's setting.

Scores (``edgekd.timeseries.scoring``): per-step squared reconstruction error averaged over the
metrics and over the test windows covering the step (test stride ``--test-stride``); F1 with the
best threshold on the test labels (``f1_best``, what the SMD papers report), with the 0.99 quantile
of the validation scores (``f1_val``), both point-adjusted as well (``f1_pa_*``, inflated), AUC;
per machine and the unweighted mean. Seed reference (28 machines, LSTM-AE, point-wise best F1):
teacher 0.4031, noisy student-1 0.4171, student-2 0.4182, noisy ensemble of 3 0.4241.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _common import machine, print_table, write_results  # noqa: E402

SENSORS = list(range(0, 38, 4))  # 10 of 38 metrics: the sensors a small device has
TEACHER = ("lstm-ae", {"hidden": 64, "latent": 32})
SMALL = ("lstm-ae", {"hidden": 16, "latent": 8})
FC = ("fc-ae", {"hidden": [64], "latent": 16})
CONV = ("conv1d-ae", {"channels": [32, 16], "latent": 16})
KD_LOSSES = [{"name": "recon-mse", "weight": 0.5}, {"name": "output-mse", "weight": 0.5}]
FIGURES = ("f1_best", "f1_val", "f1_pa_best", "f1_pa_val", "auc", "p_best", "r_best", "p_val", "r_val")


def recipe(name: str, model: tuple[str, dict], data: dict, args: argparse.Namespace, **extra: Any) -> dict:
    return {"name": name, "seed": args.seed, "data": {"name": "smd", "options": data},
            "model": {"name": model[0], "kwargs": model[1]},
            "train": {"epochs": args.epochs, "batch_size": args.batch, "optimizer": "adam", "lr": args.lr,
                      "schedule": "cosine", "threads": 1}, **extra}  # fmt: skip


def params_of(paths: list[Path]) -> int:
    from edgekd.models.checkpoint import load_model

    return sum(sum(p.numel() for p in load_model(f)[0].parameters()) for f in paths)


def bench_machine(name: str, args: argparse.Namespace, log: list[dict]) -> list[dict]:
    """Every row for one machine (each row: method, its per-machine report, params, sizes, recipe)."""
    from edgekd.distill.runner import run_training
    from edgekd.export import export_run
    from edgekd.recipe import recipe_from_dict
    from edgekd.timeseries.scoring import score_run

    root = Path(args.runs_dir) / f"seed{args.seed}" / name
    data = {"machines": [name], "length": args.length, "stride": args.stride, "test_stride": args.test_stride}
    rows: list[dict] = []

    def train(r: dict, distill: bool) -> Path:
        t0 = time.perf_counter()
        run = run_training(recipe_from_dict(r), root, distill=distill, progress=False, overwrite=True)
        log.append(
            {
                "machine": name,
                "seed": args.seed,
                "run": r["name"],
                "seconds": round(time.perf_counter() - t0, 1),
            }
        )
        print(f"  {name} seed {args.seed} {r['name']}: {log[-1]['seconds']} s", flush=True)
        return run.root

    def add(method: str, run_dir: Path, models: list[Path], r: dict | None, **kw: Any) -> dict:
        rep = score_run(run_dir, models=models, test_stride=args.test_stride, **kw)
        row = {"method": method, "report": rep["machines"][name], "params": params_of(models),
               "recipe": r, "models": [str(m.relative_to(root)) for m in models]}  # fmt: skip
        rows.append(row)
        return row

    teacher = train(recipe("teacher", TEACHER, data, args), False)
    add("teacher lstm-ae (plain reconstruction)", teacher, [teacher / "model.pt"], None)
    rows[-1]["recipe"] = recipe("teacher", TEACHER, data, args)
    r = recipe("small-alone", SMALL, data, args)
    d = train(r, False)
    add("small lstm-ae alone (hidden 16)", d, [d / "model.pt"], r)
    r = recipe("small-kd", SMALL, data, args, teacher={"path": str(teacher)}, losses=KD_LOSSES)
    d = train(r, True)
    add("small lstm-ae KD from teacher", d, [d / "student.pt"], r)

    candidates: list[tuple[dict, list[Path]]] = [(rows[0], [teacher / "model.pt"])]
    for label, frac in (("noisy", args.fraction), ("no noise", 0.0)):
        r = recipe(f"chain-{'noisy' if frac else 'clean'}", TEACHER, data, args, teacher={"path": str(teacher)},
                   method={"name": "noisy-sequential",
                           "params": {"alpha": args.alpha, "fraction": frac, "sigma": 0.05}},
                   scheme={"name": "born-again", "params": {"generations": 3, "ensemble": True}})  # fmt: skip
        d = train(r, True)
        gens = [d / f"gen-{k}" / "student.pt" for k in (1, 2, 3)]
        for k, g in enumerate(gens, 1):
            candidates.append((add(f"lstm-ae gen {k} {label}", d, [g], r), [g]))
        for k in (2, 3):
            candidates.append(
                (add(f"ensemble gen 1-{k} {label} (mean reconstruction)", d, gens[:k], r), gens[:k])
            )

    best_row, best = max(candidates, key=lambda c: c[0]["report"]["f1_best"])
    t_spec = (
        {"path": str(best[0])}
        if len(best) == 1
        else {"paths": [str(p) for p in best], "combine": "mean-logits"}
    )
    r = recipe("fc-alone", FC, data, args)
    d = train(r, False)
    add("fc-ae alone", d, [d / "model.pt"], r)
    for label, model in (("fc-ae", FC), ("conv1d-ae", CONV)):
        r = recipe(f"{label}-kd", model, data, args, teacher=t_spec, losses=KD_LOSSES)
        d = train(r, True)
        row = add(f"{label} KD from best ({best_row['method']})", d, [d / "student.pt"], r)
        row["teacher_selected_by"] = "test f1_best (optimistic)"
        t0 = time.perf_counter()
        try:
            exp = Path(export_run(d, target="tflite-micro"))
            ej = json.loads((exp / "export.json").read_text())
            flash, arena = ej["tflite"]["int8"]["bytes"], ej["micro"]["arena"]["tflm"]["total"]
            row["flash_bytes"], row["arena_bytes"] = flash, arena
            row["export_checks"] = {k: ej["checks"].get(k) for k in
                                    ("int8_max_abs_error", "int8_sqnr_db", "int8_score_spearman")}  # fmt: skip
            rep = score_run(d, int8=exp / "model_int8.tflite", test_stride=args.test_stride)
            rows.append({"method": f"{label} KD from best, int8 on TFLite Micro", "report": rep["machines"][name],
                         "params": row["params"], "flash_bytes": flash, "arena_bytes": arena, "recipe": r,
                         "export_seconds": round(time.perf_counter() - t0, 1)})  # fmt: skip
        except Exception as e:  # noqa: BLE001  (recorded in the row; the benchmark goes on)
            row["export_error"] = str(e).splitlines()[0][:300]

    sub = {**data, "features": SENSORS}
    r = recipe("sensors-alone", FC, sub, args)
    d = train(r, False)
    add(f"fc-ae on {len(SENSORS)} of 38 metrics alone", d, [d / "model.pt"], r)
    r = recipe("sensors-priv", FC, {**sub, "privileged": True}, args,
               teacher={"path": str(teacher), "input": "all_metrics"},
               losses=[{"name": "recon-mse", "weight": 0.5},
                       {"name": "sensor-mse", "weight": 0.5, "params": {"features": SENSORS}}])  # fmt: skip
    d = train(r, True)
    add(f"fc-ae on {len(SENSORS)} of 38 metrics, privileged 38-metric teacher", d, [d / "student.pt"], r)
    return rows


def _short(method: str) -> str:
    return method.split(" (")[0] if " from best (" in method else method


def aggregate(done: dict[int, dict[str, list[dict]]]) -> list[dict]:
    """Per seed the unweighted mean over the machines done, then the mean (and std) over the seeds.

    Only seeds that covered every machine of the first seed count (a partial seed is left out)."""
    import numpy as np

    names = list(next(iter(done.values())))
    seeds = [s for s, pm in done.items() if list(pm) == names]
    first = done[seeds[0]][names[0]]
    out = []
    for i, ref in enumerate(first):
        row: dict[str, Any] = {"method": _short(ref["method"])}
        per_seed = {
            k: [float(np.mean([done[s][m][i]["report"][k] for m in names])) for s in seeds] for k in FIGURES
        }
        for k in FIGURES:
            row[k] = float(np.mean(per_seed[k]))
        for k in ("f1_best", "f1_val", "auc"):
            row[f"{k}_std_over_seeds"] = float(np.std(per_seed[k], ddof=1)) if len(seeds) > 1 else None
        row["params"] = int(np.mean([done[s][m][i]["params"] for s in seeds for m in names]))
        for k in ("flash_bytes", "arena_bytes"):
            vals = [done[s][m][i].get(k) for s in seeds for m in names]
            if all(v is not None for v in vals):
                row[k] = int(np.mean(vals))
        row["seeds"] = seeds
        row["per_machine"] = {
            m: {**{k: float(np.mean([done[s][m][i]["report"][k] for s in seeds])) for k in FIGURES},
                **({"teachers": [done[s][m][i]["method"] for s in seeds]} if " from best (" in ref["method"] else {})}
            for m in names
        }  # fmt: skip
        out.append(row)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--machines", nargs="*", default=None)
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--runs-dir", default="/tmp/edgekd-smd-sequential")
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--length", type=int, default=32)
    ap.add_argument("--stride", type=int, default=8)
    ap.add_argument("--test-stride", type=int, default=4)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--lr", type=float, default=0.002)
    ap.add_argument("--alpha", type=float, default=0.5)
    ap.add_argument("--fraction", type=float, default=0.5)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--out", default="smd_sequential")
    args = ap.parse_args()
    if args.data_dir:
        os.environ["EDGEKD_DATA_DIR"] = args.data_dir
    import torch

    from edgekd.data.smd import list_machines

    torch.set_num_threads(1)
    machines = args.machines or list_machines()
    t0 = time.perf_counter()
    done: dict[int, dict[str, list[dict]]] = {}
    log: list[dict] = []
    total, n = len(machines) * len(args.seeds), 0
    for seed in args.seeds:  # seeds outside: a partial result covers every machine once first
        args.seed = seed
        for m in machines:
            done.setdefault(seed, {})[m] = bench_machine(m, args, log)
            n += 1
            write_results(args.out, {
                "benchmark": "smd_sequential",
                "complete": n == total,
                "status": "complete" if n == total else f"PARTIAL: {n} of {total} (machine, seed) runs",
                "machines": list(done[args.seeds[0]]), "machines_requested": machines, "seeds": args.seeds,
                "rows": aggregate(done),
                "per_seed_machine_rows": {str(s): pm for s, pm in done.items()},
                "setting": {**{k: v for k, v in vars(args).items() if k not in ("out", "seed")}, "sensors": SENSORS,
                            "models": {"teacher": TEACHER, "small": SMALL, "fc": FC, "conv": CONV},
                            "kd_losses": KD_LOSSES, "sigma": 0.05,
                            "val_threshold": "0.99 quantile of validation step scores",
                            "score": "mean over covering test windows of the per-step MSE over metrics",
                            "engine": "edgekd.distill.runner.run_training (recipes in per_seed_machine_rows)"},
                "seed_paper": {"f1_best_pointwise_28_machines": {"teacher": 0.4031, "noisy student-1": 0.4171,
                               "student-2": 0.4182, "noisy ensemble of 3": 0.4241}},
                "run_seconds": log, "wall_s": round(time.perf_counter() - t0, 1), "machine": machine(),
            })  # fmt: skip
    res = json.loads((Path(__file__).resolve().parent / "results" / f"{args.out}.json").read_text())
    table = [[r["method"][:60], f"{r['f1_best']:.4f}", f"{r['f1_val']:.4f}", f"{r['f1_pa_best']:.4f}",
              f"{r['auc']:.4f}", r["params"], r.get("flash_bytes", "-"), r.get("arena_bytes", "-")]
             for r in res["rows"]]  # fmt: skip
    print_table(
        f"SMD, mean over {len(res['machines'])} machines and seeds {res['seeds']} (point-wise unless pa)",
        ["method", "F1 best", "F1 val", "F1 pa best", "AUC", "params", "flash B", "arena B"],
        table,
    )


if __name__ == "__main__":
    main()
