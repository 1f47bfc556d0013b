"""Reference teachers, trained once and committed under ``benchmarks/teachers/<name>/`` so that no session
retrains them: ``model.pt`` (an edgekd checkpoint, weights stored in fp16 to stay a few MB),
``recipe.yaml`` (the resolved recipe it was trained with) and ``teacher.json`` (seed, test accuracy of
the stored fp16 weights, sha256, the command that retrains it, device and wall time).

    python benchmarks/teachers.py train digits               # train, then record
    python benchmarks/teachers.py record mnist-hinton RUN    # record a finished run of that recipe
    python benchmarks/teachers.py check                      # re-evaluate every teacher on its test split

Every benchmark that distils from a teacher loads ``teacher_path(name)``; ``tests/test_reference_teachers.py``
re-checks each committed teacher's accuracy on a sample of its test split.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks._common import REPO, machine  # noqa: E402

TEACHERS_DIR = REPO / "benchmarks" / "teachers"
SPLIT = {"split_seed": 0}  # one split for every seed of every benchmark that uses these teachers

# name -> the recipe that trains it (MCU ops are not required for teachers)
RECIPES: dict[str, dict[str, Any]] = {
    "digits": {
        "name": "teacher-digits",
        "seed": 0,
        "data": {
            "name": "digits",
            "val_fraction": 0.1,
            **SPLIT,
            "augment": [{"name": "translate", "params": {"max_shift": 1}}],
        },
        "model": {"name": "cnn", "kwargs": {"channels": [32, 64, 128], "depthwise": False, "dropout": 0.2}},
        "train": {
            "epochs": 60,
            "batch_size": 64,
            "optimizer": "sgd",
            "lr": 0.05,
            "momentum": 0.9,
            "weight_decay": 5e-4,
            "schedule": "cosine",
            "threads": 1,
        },
    },  # fmt: skip
    "mnist-hinton": {  # Hinton et al. 2015: 784-1200-1200-10, dropout 0.2 / 0.5, +-2 px jitter, max-norm
        "name": "teacher-mnist-hinton",
        "seed": 0,
        "data": {"name": "mnist", "val_fraction": 0.05, "jitter": 2, **SPLIT},
        "model": {"name": "hinton-teacher"},
        "train": {
            "epochs": 150,
            "batch_size": 128,
            "optimizer": "sgd",
            "lr": 0.05,
            "momentum": 0.9,
            "schedule": "cosine",
            "warmup_epochs": 1,
            "max_norm": 15.0,
            "threads": 1,
        },
    },  # fmt: skip
    "fashion-mnist": {
        # cnn-teacher (4 plain 3x3 convs, global average pooling) underfits Fashion-MNIST: v1 (crop 2, hflip,
        # erase 0.35 p 0.5, 40 epochs) 91.97% test at 91.7% training accuracy; v2 (no erase, 60 epochs) 92.65%
        # (2026-12-03). v3: a VGG of 6 convs (2x the MACs of cnn-teacher), dropout, the same augmentation.
        "name": "teacher-fashion-mnist",
        "seed": 0,
        "data": {
            "name": "fashion-mnist",
            "val_fraction": 0.1,
            **SPLIT,
            "augment": [{"name": "crop", "params": {"padding": 2}}, {"name": "hflip"}],
        },
        "model": {"name": "vgg", "kwargs": {"stages": [[32, 32], [64, 64], [128, 128]], "dropout": 0.3}},
        "train": {
            "epochs": 40,
            "batch_size": 128,
            "optimizer": "sgd",
            "lr": 0.05,
            "momentum": 0.9,
            "nesterov": True,
            "weight_decay": 5e-4,
            "schedule": "cosine",
            "threads": 1,
        },
    },  # fmt: skip
    # kd_gain's MNIST teacher: its CNN students (2k-50k parameters) come close to the 1200-1200 MLP's
    # 99.0%, so they learn from a CNN teacher (the MLP stays the Hinton benchmark's teacher)
    "mnist-cnn": {
        "name": "teacher-mnist-cnn",
        "seed": 0,
        "data": {
            "name": "mnist",
            "val_fraction": 0.05,
            **SPLIT,
            "augment": [{"name": "translate", "params": {"max_shift": 2}}],
        },
        "model": {"name": "cnn-teacher"},
        "train": {
            "epochs": 30,
            "batch_size": 128,
            "optimizer": "sgd",
            "lr": 0.05,
            "momentum": 0.9,
            "nesterov": True,
            "weight_decay": 5e-4,
            "schedule": "cosine",
            "threads": 1,
        },
    },  # fmt: skip
}


def teacher_path(name: str) -> Path:
    """The committed checkpoint of reference teacher ``name`` (``benchmarks/teachers.py train`` makes it)."""
    p = TEACHERS_DIR / name / "model.pt"
    if not p.exists():
        raise SystemExit(f"{p}: reference teacher missing; run `python benchmarks/teachers.py train {name}`")
    return p


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def evaluate_teacher(name: str, limit: int | None = None) -> dict[str, Any]:
    """Test accuracy of the committed teacher on its recipe's test split (the first ``limit`` examples)."""
    from edgekd.data.prepare import prepare_data
    from edgekd.metrics.evaluate import evaluate
    from edgekd.models import load_model
    from edgekd.recipe import recipe_from_dict

    recipe = recipe_from_dict(RECIPES[name], f"teacher {name}")
    test = prepare_data(recipe).test
    if limit is not None and limit < len(test):
        test = test.subset(__import__("numpy").arange(limit))
    model, _ = load_model(TEACHERS_DIR / name / "model.pt")
    return {"n": len(test), **evaluate(model, test)}


def record(name: str, run_dir: Path, seconds: float | None) -> dict[str, Any]:
    """Copy the run's model into ``benchmarks/teachers/<name>/`` in fp16 and write ``teacher.json``."""
    import torch

    from edgekd.atomic import atomic_torch_save, atomic_write_json, atomic_write_text

    out = TEACHERS_DIR / name
    out.mkdir(parents=True, exist_ok=True)
    obj = torch.load(run_dir / "model.pt", map_location="cpu", weights_only=True)
    obj["state_dict"] = {k: v.half() if v.is_floating_point() else v for k, v in obj["state_dict"].items()}
    atomic_torch_save(out / "model.pt", obj)
    atomic_write_text(out / "recipe.yaml", (run_dir / "recipe.yaml").read_text())
    metrics = json.loads((run_dir / "metrics.json").read_text())
    history = metrics.get("history", [])
    if seconds is None:
        seconds = sum(r.get("seconds", 0.0) for r in history)
    test = evaluate_teacher(name)
    info = {
        "name": name,
        "model": RECIPES[name]["model"],
        "seed": RECIPES[name]["seed"],
        "data": RECIPES[name]["data"],
        "test_accuracy": test["accuracy"],
        "test_errors": test["errors"],
        "test_examples": test["n"],
        "test_accuracy_fp32_weights": metrics.get("final", {}).get("test_accuracy"),
        "weights": "fp16 (test_accuracy is measured with these fp16 weights, run in fp32)",
        "epochs": len(history),
        "train_seconds": round(seconds, 1),
        "sha256": sha256(out / "model.pt"),
        "bytes": (out / "model.pt").stat().st_size,
        "retrain": f"python benchmarks/teachers.py train {name}",
        "device": "cpu",
        "machine": machine(),
    }
    atomic_write_json(out / "teacher.json", info)
    # the run-folder record `edgekd run` reads for the teacher's accuracy (of the stored fp16 weights)
    final = {"test_accuracy": test["accuracy"], "test_errors": test["errors"], "test_examples": test["n"],
             "weights": "fp16"}  # fmt: skip
    atomic_write_json(out / "metrics.json", {"final": final})
    return info


def train(name: str, runs: Path) -> dict[str, Any]:
    from edgekd.distill.runner import run_training
    from edgekd.recipe import recipe_from_dict

    recipe = recipe_from_dict(RECIPES[name], f"teacher {name}")
    t0 = time.perf_counter()
    run = run_training(recipe, runs, distill=False, resume=(runs / recipe.name / "checkpoint.pt").exists(),
                       progress=False)  # fmt: skip
    return record(name, run.root, time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train")
    t.add_argument("name", choices=sorted(RECIPES))
    t.add_argument("--runs", type=Path, default=REPO / "runs" / "teachers")
    r = sub.add_parser("record")
    r.add_argument("name", choices=sorted(RECIPES))
    r.add_argument("run", type=Path)
    c = sub.add_parser("check")
    c.add_argument("names", nargs="*")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    if args.cmd == "train":
        print(json.dumps(train(args.name, args.runs), indent=1))
    elif args.cmd == "record":
        print(json.dumps(record(args.name, args.run, None), indent=1))
    else:
        for name in args.names or sorted(p.parent.name for p in TEACHERS_DIR.glob("*/teacher.json")):
            info = json.loads((TEACHERS_DIR / name / "teacher.json").read_text())
            got = evaluate_teacher(name)
            ok = sha256(TEACHERS_DIR / name / "model.pt") == info["sha256"]
            print(f"{name}: test accuracy {got['accuracy']:.4f} (recorded {info['test_accuracy']:.4f}), sha256 "
                  f"{'ok' if ok else 'DIFFERS'}")  # fmt: skip


if __name__ == "__main__":
    main()
