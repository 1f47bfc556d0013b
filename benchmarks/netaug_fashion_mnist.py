"""NetAug on a tiny CNN, Fashion-MNIST: baseline vs NetAug vs KD vs NetAug+KD.

NetAug (Cai et al., "Network Augmentation for Tiny Deep Learning", ICLR 2022) reports +1.2 to +1.6
ImageNet top-1 for MCU-sized models (MobileNetV2-Tiny 51.7 -> 53.3, MCUNet 61.5 -> 62.7), and NetAug+KD
above both. Here the student is a plain-conv TinyCNN (``cnn``, channels 8/16/32, 6.3k parameters), trained
for a fixed number of steps on the full Fashion-MNIST training split with each method, 3 seeds; the
teacher is the cached CNN teacher of ``benchmarks/fewshot_fashion_mnist.py`` (``runs/bench/``).

    EDGEKD_DATA_DIR=/work/shared/datasets .venv/bin/python benchmarks/netaug_fashion_mnist.py [--quick]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
for p in (str(ROOT), str(HERE)):
    if p not in sys.path:
        sys.path.insert(0, p)

from fewshot_fashion_mnist import (  # noqa: E402
    THREADS_HELP,
    get_teacher,
    mean_std,
    train_steps,
)

from edgekd.atomic import atomic_write_json  # noqa: E402
from edgekd.data import ArrayDataset, load_data  # noqa: E402
from edgekd.distill.engine import evaluate, seed_everything  # noqa: E402
from edgekd.distill.methods import build_method  # noqa: E402
from edgekd.models import build_model  # noqa: E402
from edgekd.recipe import TrainConfig  # noqa: E402

STUDENT = {"name": "cnn", "kwargs": {"channels": [8, 16, 32], "depthwise": False}}
NETAUG = {"width_mults": [1.0, 1.8, 2.6], "alpha": 1.0, "aug_fraction": 1.0}
KD = {"temperature": 4.0, "alpha": 0.9}
METHODS = {
    "baseline": ("supervised", {}, False),
    "netaug": ("netaug", NETAUG, False),
    "kd": ("kd", KD, True),
    "netaug+kd": ("netaug", {**NETAUG, "temperature": 4.0, "kd_alpha": 0.9}, True),
}
PAPER = {
    "imagenet_top1": {
        "mobilenetv2-tiny": {"baseline": 51.7, "netaug": 53.3},
        "mcunet": {"baseline": 61.5, "netaug": 62.7},
    },
    "claim": "+1.2 to +1.6 top-1 for MCU-sized models; NetAug+KD above KD and NetAug",
}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="tiny settings for a smoke test")
    ap.add_argument("--threads", type=int, default=1, help=THREADS_HELP)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--runs-dir", default=str(ROOT / "runs" / "bench"))
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "netaug_fashion_mnist.json"))
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    os.environ.setdefault("EDGEKD_DATA_DIR", "/work/shared/datasets")
    t_start = time.perf_counter()
    seeds, steps = list(range(args.seeds)), args.steps
    if args.quick:
        seeds, steps = [0, 1], 10
    cfg = TrainConfig(optimizer="adam", lr=3e-3, batch_size=args.batch_size, schedule="cosine")
    splits = load_data("fashion-mnist", seed=0, val_fraction=0.1)
    if args.quick:
        splits.test = ArrayDataset(splits.test.x[:1000], splits.test.y[:1000])
        splits.train = ArrayDataset(splits.train.x[:3000], splits.train.y[:3000])
    teacher, tinfo = get_teacher(splits, args.quick, Path(args.runs_dir))
    tinfo.pop("abs_dir")
    print(f"teacher {tinfo['model']} {tinfo['kwargs']}: test {tinfo['test_acc']}%", flush=True)
    kw = {"input_shape": list(splits.input_shape), "num_classes": splits.num_classes, **STUDENT["kwargs"]}
    student_params = sum(p.numel() for p in build_model(STUDENT["name"], **kw).parameters())

    results: dict[str, Any] = {}
    for method, (name, params, uses_teacher) in METHODS.items():
        rows = []
        for seed in seeds:
            seed_everything(seed)
            student = build_model(STUDENT["name"], **kw)
            p = dict(params)
            if name == "netaug":
                p["seed"] = seed
            distiller = build_method(name, student, teacher if uses_teacher else None, p)
            out = train_steps(distiller, splits.train, cfg, steps, seed)
            exported = out["student"]
            assert type(exported).__name__ == "TinyCNN"
            acc = 100 * evaluate(exported, splits.test)["accuracy"]
            rows.append({"acc": acc, "seconds": out["seconds"]})
            print(f"{method:>10} seed={seed} acc={acc:.2f} ({out['seconds']:.0f}s)", flush=True)
        m, s = mean_std([r["acc"] for r in rows])
        results[method] = {
            "acc_mean": round(m, 2),
            "acc_std": round(s, 2),
            "per_seed": [round(r["acc"], 2) for r in rows],
            "seeds": seeds,
            "steps": steps,
            "batch_size": args.batch_size,
            "epochs": round(steps * args.batch_size / len(splits.train), 2),
            "wall_s": round(sum(r["seconds"] for r in rows), 1),
            "params": params,
        }
        deltas = {}
        if "netaug" in results and "baseline" in results:
            deltas["netaug_minus_baseline"] = round(
                results["netaug"]["acc_mean"] - results["baseline"]["acc_mean"], 2
            )
        if "netaug+kd" in results and "kd" in results:
            deltas["netaugkd_minus_kd"] = round(
                results["netaug+kd"]["acc_mean"] - results["kd"]["acc_mean"], 2
            )
            deltas["netaugkd_minus_netaug"] = round(
                results["netaug+kd"]["acc_mean"] - results["netaug"]["acc_mean"], 2
            )
        report = {
            "benchmark": "NetAug (Cai et al., ICLR 2022) on a tiny CNN, Fashion-MNIST",
            "complete": len(results) == len(METHODS),
            "quick": args.quick,
            "dataset": {"name": "fashion-mnist", "train": len(splits.train), "test": len(splits.test)},
            "student": {**STUDENT, "params": student_params,
                        "description": "TinyCNN: 3x3 conv 8 -> 3x3 conv 16 (s2) -> 3x3 conv 32 (s2), BN+ReLU, "
                                       "global avg pool, linear; exported as plain nn modules"},
            "teacher": tinfo,
            "training": {"optimizer": "adam", "lr": cfg.lr, "schedule": "cosine per step", "steps": steps,
                         "batch_size": args.batch_size,
                         "epochs": round(steps * args.batch_size / len(splits.train), 2),
                         "note": "short schedule (CPU budget); NetAug's gains in the paper come from long "
                                 "ImageNet schedules"},
            "netaug": NETAUG,
            "results": results,
            "deltas": deltas,
            "paper": PAPER,
            "threads": args.threads,
            "wall_s": round(time.perf_counter() - t_start, 1),
        }  # fmt: skip
        atomic_write_json(args.out, report)
    _print_table(results, student_params)
    print(f"wrote {args.out} in {time.perf_counter() - t_start:.0f}s")


def _print_table(results: dict[str, Any], params: int) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"Fashion-MNIST, TinyCNN ({params} params): test top-1 (%)")
    for c in ("method", "mean ± std", "per seed", "wall s"):
        t.add_column(c, justify="right" if c != "method" else "left")
    for m, r in results.items():
        t.add_row(m, f"{r['acc_mean']:.2f} ± {r['acc_std']:.2f}", " ".join(f"{a:.2f}" for a in r["per_seed"]),
                  f"{r['wall_s']:.0f}")  # fmt: skip
    Console().print(t)
    np.set_printoptions()


if __name__ == "__main__":
    main()
