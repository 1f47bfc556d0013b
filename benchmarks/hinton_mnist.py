"""Hinton et al. (2015) MNIST reproduction: teacher 784-1200-1200-10 (dropout + jitter), student
784-800-800-10 on labels alone, and the same student distilled at T=20.

    python benchmarks/hinton_mnist.py [--seeds 0 1] [--teacher-epochs 100] [--student-epochs 30] [--distill-lr 0.02]

Writes benchmarks/results/hinton_mnist.json with teacher_errors, student_errors, distilled_errors (per
seed), their mean +- std, wall time per epoch, and the share of the student->teacher gap that
distillation closes. Paper: 67 / 146 / 74 test errors.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _common import REPO, machine, mean_std, print_table, write_results  # noqa: E402

from edgekd.distill.runner import prepare_data, run_training  # noqa: E402
from edgekd.models.checkpoint import read_checkpoint  # noqa: E402
from edgekd.recipe import recipe_from_dict  # noqa: E402


def recipe(
    name: str, seed: int, model: str, epochs: int, method: dict, teacher: str | None, jitter: int, lr: float
) -> dict:
    r = {
        "name": name,
        "seed": seed,
        "data": {"name": "mnist", "val_fraction": 0.0, "jitter": jitter},
        "model": {"name": model},
        "method": method,
        "train": {"epochs": epochs, "batch_size": 128, "optimizer": "sgd", "lr": lr, "momentum": 0.9,
                  "schedule": "cosine", "warmup_epochs": 1, "max_norm": 15.0 if model == "hinton-teacher" else 0.0},
    }  # fmt: skip
    if teacher:
        r["teacher"] = {"path": teacher}
    return r


def train(r: dict, runs: Path, distill: bool, splits=None) -> tuple[int, float, Path]:
    rec = recipe_from_dict(r, "benchmark")
    run = runs / rec.name
    ck = run / ("student.pt" if distill else "model.pt")
    if not ck.exists():
        run_training(
            rec,
            runs,
            distill=distill,
            resume=(run / "checkpoint.pt").exists(),
            progress=sys.stdout.isatty(),
            splits=splits,
        )
    meta = read_checkpoint(ck)["meta"]
    import json

    hist = json.loads((run / "metrics.json").read_text())["history"]
    return int(meta["test_errors"]), sum(h["seconds"] for h in hist) / len(hist), run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--teacher-epochs", type=int, default=100)
    ap.add_argument("--student-epochs", type=int, default=30)
    ap.add_argument("--temperature", type=float, default=20.0)
    ap.add_argument("--alpha", type=float, default=0.9)
    ap.add_argument("--runs", type=Path, default=REPO / "runs" / "bench" / "hinton")
    ap.add_argument("--distill-lr", type=float, default=0.02, help="learning rate of the distilled student")
    ap.add_argument("--out", default="hinton_mnist", help="results file name in benchmarks/results/")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(2)
    rows, per_seed = [], []
    t0 = time.time()
    for seed in args.seeds:
        splits = prepare_data(
            recipe_from_dict(recipe("x", seed, "mlp", 1, {"name": "supervised"}, None, 0, 0.1))
        )
        sup = {"name": "supervised"}
        te, t_sec, t_run = train(
            recipe(
                f"teacher-s{seed}-e{args.teacher_epochs}",
                seed,
                "hinton-teacher",
                args.teacher_epochs,
                sup,
                None,
                2,
                0.05,
            ),
            args.runs,
            False,
            splits,
        )
        se, s_sec, _ = train(
            recipe(
                f"student-s{seed}-e{args.student_epochs}",
                seed,
                "hinton-student",
                args.student_epochs,
                sup,
                None,
                0,
                0.05,
            ),
            args.runs,
            False,
            splits,
        )
        kd = {"name": "kd", "params": {"temperature": args.temperature, "alpha": args.alpha}}
        de, d_sec, _ = train(
            recipe(
                f"distilled-s{seed}-e{args.student_epochs}-T{args.temperature:g}-t{args.teacher_epochs}"
                + (f"-lr{args.distill_lr:g}" if args.distill_lr != 0.05 else ""),
                seed,
                "hinton-student",
                args.student_epochs,
                kd,
                str(t_run),
                0,
                args.distill_lr,
            ),
            args.runs,
            True,
            splits,
        )
        gap = (se - de) / (se - te) if se != te else float("nan")
        per_seed.append({"seed": seed, "teacher_errors": te, "student_errors": se, "distilled_errors": de, "gap_closed": gap,
                         "seconds_per_epoch": {"teacher": t_sec, "student": s_sec, "distilled": d_sec}})  # fmt: skip
        rows.append([seed, te, se, de, f"{gap:.0%}", f"{t_sec:.1f} / {s_sec:.1f} / {d_sec:.1f}"])
    tm, ts = mean_std([p["teacher_errors"] for p in per_seed])
    sm, ss = mean_std([p["student_errors"] for p in per_seed])
    dm, ds = mean_std([p["distilled_errors"] for p in per_seed])
    gap = (sm - dm) / (sm - tm) if sm != tm else float("nan")
    rows.append(["mean", f"{tm:.1f}±{ts:.1f}", f"{sm:.1f}±{ss:.1f}", f"{dm:.1f}±{ds:.1f}", f"{gap:.0%}", ""])
    rows.append(["paper", 67, 146, 74, f"{(146 - 74) / (146 - 67):.0%}", ""])
    result = {
        "benchmark": "hinton_mnist",
        "setup": {
            "data": "MNIST 60k train / 10k test (no validation split)",
            "teacher": "784-1200-1200-10, dropout 0.2/0.5, +-2px jitter, max-norm 15",
            "student": "784-800-800-10, no regularisation",
            "distilled": f"784-800-800-10, KD T={args.temperature:g}, alpha={args.alpha}, lr={args.distill_lr:g}",
            "optimizer": "SGD momentum 0.9, lr 0.05, cosine, 1 warm-up epoch, batch 128",
            "teacher_epochs": args.teacher_epochs,
            "student_epochs": args.student_epochs,
        },  # fmt: skip
        "teacher_errors": [p["teacher_errors"] for p in per_seed],
        "student_errors": [p["student_errors"] for p in per_seed],
        "distilled_errors": [p["distilled_errors"] for p in per_seed],
        "mean_std": {"teacher": [tm, ts], "student": [sm, ss], "distilled": [dm, ds]},
        "gap_closed": gap,
        "goal_gap_closed_at_least": 0.70,
        "paper": {"teacher_errors": 67, "student_errors": 146, "distilled_errors": 74},
        "per_seed": per_seed,
        "wall_seconds": round(time.time() - t0, 1),
        "machine": machine(),
    }
    write_results(args.out, result)
    print_table(
        "Hinton MNIST (test errors of 10,000)",
        ["seed", "teacher", "student", "distilled", "gap closed", "s/epoch t/s/d"],
        rows,
    )


if __name__ == "__main__":
    main()
