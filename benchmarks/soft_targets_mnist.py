"""Hinton et al. (2015) soft-target experiments on MNIST, with the teacher of hinton_mnist.py.

(a) omitted class: the 784-800-800-10 student never sees a 3 and learns it from soft targets alone;
    the output bias of class 3 is then tuned on the validation split (paper: 206 errors before,
    109 after, 14 of them on 3s; bias +3.5).
(b) soft targets as a regulariser: 3% of the training set with hard labels vs soft targets
    (Hinton's speech result: 44.5% vs 57.0% frame accuracy, 58.9% with all data).

    python benchmarks/soft_targets_mnist.py [--teacher runs/bench/hinton/teacher-s0-e50] [--seeds 0]

The teacher is the final (60k) teacher of ``hinton_mnist.py``. The omitted-class student takes the
distillation settings that ``hinton_mnist.py --phase val`` chose on its validation split (learning rate,
epochs, max-norm, temperature; ``--choice``); the 3% runs keep their example recipes.

Writes benchmarks/results/soft_targets_mnist.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _common import REPO, machine, mean_std, print_table, train_run, write_results  # noqa: E402

from edgekd.recipe import load_recipe  # noqa: E402


def run_example(name: str, runs: Path, seed: int, teacher: Path, distill: bool, overrides: list[str]) -> dict:
    over = [f"seed={seed}", f"name={Path(name).stem}-s{seed}-{teacher.name}", "train.threads=1"] + overrides
    if distill:
        over.append(f"teacher.path={teacher}")
    rec = load_recipe(REPO / "examples" / name, over)
    folder, _ = train_run(rec, runs, distill=distill, progress=sys.stdout.isatty())
    return json.loads((folder / "metrics.json").read_text())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--teacher", type=Path, default=REPO / "runs" / "bench" / "hinton" / "teacher-s0-e50")
    ap.add_argument("--choice", type=Path, default=REPO / "runs" / "bench" / "hinton" / "choice-t50.json",
                    help="settings chosen on validation by hinton_mnist.py (used for the omitted-class student)")  # fmt: skip
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--epochs", type=int, default=None, help="override epochs of every run")
    ap.add_argument("--runs", type=Path, default=REPO / "runs" / "bench" / "soft_targets")
    args = ap.parse_args()
    if not (args.teacher / "model.pt").exists():
        sys.exit(f"{args.teacher}: no teacher; run benchmarks/hinton_mnist.py first")
    extra = [f"train.epochs={args.epochs}"] if args.epochs else []
    omitted_extra, chosen = list(extra), None
    if args.choice.exists():
        chosen = json.loads(args.choice.read_text())["distilled"]
        omitted_extra = [f"train.lr={chosen['lr']}", f"train.max_norm={chosen['max_norm']}",
                         f"method.params.temperature={chosen['temperature']}",
                         f"train.epochs={args.epochs or chosen['epochs']}"]  # fmt: skip
    t0 = time.time()
    omitted, hard, soft = [], [], []
    for seed in args.seeds:
        m = run_example("hinton_omitted_class.yaml", args.runs, seed, args.teacher, True, omitted_extra)
        omitted.append({"seed": seed, "test_errors_after_bias": m["final"]["test_errors"],
                        "errors_on_3_after_bias": m["test_errors_on_excluded"]["3"], "test_3s": m["test_errors_on_excluded"]["count"],
                        "bias_offset": m["bias_correction"]["3"]})  # fmt: skip
        hard.append(
            run_example("hinton_3pct_hard.yaml", args.runs, seed, args.teacher, False, extra)["final"][
                "test_accuracy"
            ]
        )
        soft.append(
            run_example("hinton_3pct_soft.yaml", args.runs, seed, args.teacher, True, extra)["final"][
                "test_accuracy"
            ]
        )
    teacher_acc = json.loads((args.teacher / "metrics.json").read_text())["final"]["test_accuracy"]
    hm, hs = mean_std(hard)
    sm, ss = mean_std(soft)
    em, es = mean_std([o["test_errors_after_bias"] for o in omitted])
    e3m, e3s = mean_std([o["errors_on_3_after_bias"] for o in omitted])
    result = {
        "benchmark": "soft_targets_mnist",
        "teacher": str(args.teacher.relative_to(REPO))
        if args.teacher.is_relative_to(REPO)
        else str(args.teacher),
        "teacher_test_accuracy": teacher_acc,
        "omitted_class_settings": omitted_extra or "examples/hinton_omitted_class.yaml as is",
        "device": "cpu (no GPU was lent to this task)",
        "omitted_class": {
            "per_seed": omitted,
            "test_errors_mean_std": [em, es],
            "errors_on_3_mean_std": [e3m, e3s],
            "paper": {"test_errors": 109, "errors_on_3": 14, "bias_offset": 3.5},
        },  # fmt: skip
        "three_percent": {
            "hard_accuracy": hard,
            "soft_accuracy": soft,
            "hard_mean_std": [hm, hs],
            "soft_mean_std": [sm, ss],
            "paper_speech_frame_accuracy": {"hard_3pct": 0.445, "soft_3pct": 0.570, "all_data": 0.589},
        },  # fmt: skip
        "wall_seconds": round(time.time() - t0, 1),
        "machine": machine(),
    }
    write_results("soft_targets_mnist", result)
    print_table("Omitted digit 3 (student never sees a 3)", ["", "test errors", "errors on 3s"],
                [["edgekd", f"{em:.0f}±{es:.0f}", f"{e3m:.0f}±{e3s:.0f} of {omitted[0]['test_3s']}"], ["paper", 109, 14]])  # fmt: skip
    print_table("3% of the training set", ["", "hard labels", "soft targets", "teacher (all data)"],
                [["edgekd (MNIST test acc)", f"{hm:.4f}±{hs:.4f}", f"{sm:.4f}±{ss:.4f}", f"{teacher_acc:.4f}"],
                 ["paper (speech frame acc)", 0.445, 0.570, 0.589]])  # fmt: skip


if __name__ == "__main__":
    main()
