"""NetAug's gain on a tiny CNN on Fashion-MNIST, and where it turns negative as the CNN grows.

NetAug (Cai et al., "Network Augmentation for Tiny Deep Learning", ICLR 2022) trains a tiny model inside
wider models that share its weights; it reports +1.2 to +1.6 ImageNet top-1 for MCU-sized models and a
loss for large ones (ResNet-50, its Figure 1). Here, on edgekd's engine (``Trainer`` / ``build_method``):

1. ``tune``: NetAug's width multipliers and aux-loss weight, chosen on the validation split (6k held
   out of the 60k training images) for the headline CNN, seed 0, on the sweep's training subset.
2. ``headline``: a plain-conv TinyCNN (``cnn``, channels 4/8/16, 1.7k parameters) that underfits
   Fashion-MNIST (training accuracy well below 95%), baseline vs NetAug on the full 54k training split,
   3 seeds; augmentation stops half-way and the base model's BN statistics are re-estimated at the end.
   A baseline with twice the epochs (seed 0) checks that the baseline has converged.
3. ``sweep``: the same comparison for CNNs from 1.7k to 94k parameters on a fixed, seeded subset of the
   training split (CPU budget); the gain (NetAug - baseline, paired per seed) against the parameter count
   is plotted into docs/netaug_size_sweep.png.

Every finished run is cached as JSON under ``--runs-dir`` (a rerun skips it); the results JSON is
rewritten after every run.

    EDGEKD_DATA_DIR=/work/shared/datasets .venv/bin/python benchmarks/netaug_fashion_mnist.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _common import REPO, RunStore, machine, mean_std, print_table, spec_key  # noqa: E402

from edgekd.atomic import atomic_write_json  # noqa: E402
from edgekd.data import ArrayDataset, DataSplits, load_data  # noqa: E402
from edgekd.distill.methods import build_method  # noqa: E402
from edgekd.distill.train import Stage, Trainer, seed_everything  # noqa: E402
from edgekd.metrics.evaluate import evaluate  # noqa: E402
from edgekd.models import build_model  # noqa: E402
from edgekd.recipe import TrainConfig  # noqa: E402
from edgekd.runfolder import RunFolder  # noqa: E402

HEADLINE = [4, 8, 16]
SIZES = [[4, 8, 16], [8, 16, 32], [16, 32, 64], [32, 64, 128]]
# NetAug settings tried on the validation split (aug_fraction 0.5: augmentation stops half-way)
GRID = [
    {"width_mults": [1.0, 1.8, 2.6], "alpha": 1.0},
    {"width_mults": [1.0, 1.8, 2.6], "alpha": 0.5},
    {"width_mults": [1.0, 1.5, 2.0], "alpha": 1.0},
    {"width_mults": [1.0, 2.0, 3.0, 4.0], "alpha": 1.0},
]
AUG_FRACTION = 0.5
KD = {"temperature": 4.0, "kd_alpha": 0.9}
PAPER = {
    "imagenet_top1": {
        "mobilenetv2-tiny": {"baseline": 51.7, "netaug": 53.3},
        "mcunet": {"baseline": 61.5, "netaug": 62.7},
    },
    "claim": "helps tiny models that underfit (+1.2 to +1.6 top-1), hurts large ones that overfit (ResNet-50)",
}
PLOT = REPO / "docs" / "netaug_size_sweep.png"


def student_kwargs(channels: list[int], splits: DataSplits) -> dict[str, Any]:
    return {"input_shape": list(splits.input_shape), "num_classes": splits.num_classes,
            "channels": list(channels), "depthwise": False}  # fmt: skip


def n_params(channels: list[int], splits: DataSplits) -> int:
    return sum(p.numel() for p in build_model("cnn", **student_kwargs(channels, splits)).parameters())


def train_one(spec: dict[str, Any], splits: DataSplits, train: ArrayDataset, cache: Path) -> dict[str, Any]:
    """One training run through edgekd's engine; cached as ``cache/<key>.json``."""
    return RunStore(cache).get_or_run(spec_key(spec), lambda: measure(spec, splits, train))


def measure(spec: dict[str, Any], splits: DataSplits, train: ArrayDataset) -> dict[str, Any]:
    seed = spec["seed"]
    seed_everything(seed)
    student = build_model("cnn", **student_kwargs(spec["channels"], splits))
    params = dict(spec["params"])
    if spec["method"] == "netaug":
        params["seed"] = seed
    distiller = build_method(spec["method"], student, None, params)
    cfg = TrainConfig(optimizer="adam", lr=spec["lr"], batch_size=spec["batch_size"], schedule="cosine",
                      epochs=spec["epochs"], threads=torch.get_num_threads(), device="cpu")  # fmt: skip
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="edgekd-netaug-") as d:
        fit = Trainer([Stage("train", distiller, cfg)], None, RunFolder(d), seed=seed, progress=False).fit(
            train, splits.val
        )
    wall = time.perf_counter() - t0
    model = distiller.export_student()
    assert type(model).__name__ == "TinyCNN"
    rec = {
        **spec,
        "key": spec_key(spec),
        "train_n": len(train),
        "wall_s": round(wall, 1),  # 1 thread on a 2-core machine shared with other jobs
        "s_per_epoch": round(wall / spec["epochs"], 2),
        # the exported model (eval mode, recalibrated BN for NetAug) on the examples it trained on
        "train_acc": round(100 * evaluate(model, train)["accuracy"], 2),
        "val_acc": round(100 * evaluate(model, splits.val)["accuracy"], 2),
        "test_acc": round(100 * evaluate(model, splits.test)["accuracy"], 2),
        "curve": [
            {
                "epoch": r["epoch"],
                "train_acc": round(100 * r["train_accuracy"], 2),
                "val_acc": round(100 * r["val_accuracy"], 2),
                "train_loss": round(r["train_loss"], 4),
            }
            for r in fit.history
        ],
    }
    return rec


def cached(spec: dict[str, Any], cache: Path) -> dict[str, Any] | None:
    return RunStore(cache).get(spec_key(spec))


def summarise(base: list[dict[str, Any]], aug: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean ± std of baseline and NetAug, and the per-seed (paired) gain."""
    out: dict[str, Any] = {}
    for name, rows in (("baseline", base), ("netaug", aug)):
        for k in ("train_acc", "val_acc", "test_acc"):
            m, s = mean_std([r[k] for r in rows])
            out[f"{name}_{k}"] = [round(m, 2), round(s, 2)]
        out[f"{name}_per_seed_test"] = [r["test_acc"] for r in rows]
        out[f"{name}_wall_s"] = round(sum(r["wall_s"] for r in rows), 1)
    by_seed = {r["seed"]: r["test_acc"] for r in base}
    gains = [r["test_acc"] - by_seed[r["seed"]] for r in aug if r["seed"] in by_seed]
    m, s = mean_std(gains)
    out["gain_per_seed"] = [round(g, 2) for g in gains]
    out["gain"] = [round(m, 2), round(s, 2)]
    out["seeds"] = sorted(by_seed)
    return out


def plot(sweep: list[dict[str, Any]], headline: dict[str, Any] | None, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter

    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    pts = [s for s in sweep if s["gain_per_seed"]]
    x = [s["params"] for s in pts]
    ax.errorbar(x, [s["gain"][0] for s in pts], yerr=[s["gain"][1] for s in pts], marker="o", capsize=4,
                label=f"sweep ({pts[0]['train_n'] if pts else '?'} training images)")  # fmt: skip
    if headline and headline["gain_per_seed"]:
        ax.errorbar([headline["params"]], [headline["gain"][0]], yerr=[headline["gain"][1]], marker="s",
                    color="C3", capsize=4, label=f"headline ({headline['train_n']} training images)")  # fmt: skip
    for s in pts:
        ax.plot([s["params"]] * len(s["gain_per_seed"]), s["gain_per_seed"], ".", color="C0", alpha=0.5)
    if headline and headline["gain_per_seed"]:
        hp = headline["gain_per_seed"]
        ax.plot([headline["params"]] * len(hp), hp, ".", color="C3", alpha=0.5)
    ax.axhline(0, color="grey", lw=0.8)
    ax.set_xscale("log")
    ax.set_xlabel("student parameters (log)")
    ax.set_ylabel("test accuracy gain, NetAug - baseline (points)")
    ax.set_title("NetAug gain on Fashion-MNIST (mean ± std; dots: seeds)")
    ax.legend(fontsize=8)
    for name, key, style in (("baseline", "baseline", "o-"), ("NetAug", "netaug", "s--")):
        ax2.plot(x, [s[f"{key}_train_acc"][0] for s in pts], style, label=f"{name} train")
        ax2.plot(x, [s[f"{key}_test_acc"][0] for s in pts], style, label=f"{name} test", alpha=0.6)
    ax2.set_xscale("log")
    ax2.set_xlabel("student parameters (log)")
    ax2.set_ylabel("accuracy (%)")
    ax2.set_title("underfitting: train accuracy vs size (sweep)")
    ax2.legend(fontsize=8)
    for a in (ax, ax2):
        a.xaxis.set_minor_formatter(NullFormatter())
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110)
    tmp.replace(path)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="tiny settings for a smoke test (< 1 min)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1 on the shared 2-core machine)")
    ap.add_argument("--headline-seeds", type=int, default=3)
    ap.add_argument("--sweep-seeds", type=int, default=2)
    ap.add_argument("--headline-epochs", type=int, default=30)
    ap.add_argument(
        "--large-seeds", type=int, default=1, help="sweep seeds for CNNs above 50k parameters (CPU)"
    )
    ap.add_argument("--sweep-epochs", type=int, default=20)
    ap.add_argument("--subset", type=int, default=10000, help="training images of the tuning and size sweep")
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--phases", nargs="*", default=["tune", "headline", "sweep"])
    ap.add_argument("--plot-only", action="store_true", help="redraw the plot from the results JSON")
    ap.add_argument("--kd", action="store_true", help="also NetAug+KD columns (off: not part of issue 12)")
    ap.add_argument("--runs-dir", default=str(REPO / "runs" / "bench" / "netaug"))
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "netaug_fashion_mnist.json"))
    args = ap.parse_args(argv)
    if args.kd:
        raise SystemExit("--kd: NetAug+KD is not run by this benchmark yet (see docs/netaug.md)")
    if args.plot_only:
        rep = json.loads(Path(args.out).read_text())
        plot(rep["phases"].get("size_sweep", []), rep["phases"].get("headline"), PLOT)
        return
    torch.set_num_threads(args.threads)
    t_start = time.perf_counter()
    splits = load_data("fashion-mnist", seed=0, val_fraction=0.1)
    sizes, grid = SIZES, GRID
    h_seeds, s_seeds = list(range(args.headline_seeds)), list(range(args.sweep_seeds))
    h_epochs, s_epochs, subset = args.headline_epochs, args.sweep_epochs, args.subset
    cache = Path(args.runs_dir)
    out_path = Path(args.out)
    plot_path = PLOT
    if args.quick:
        splits.train = ArrayDataset(splits.train.x[:2000], splits.train.y[:2000])
        splits.val = ArrayDataset(splits.val.x[:500], splits.val.y[:500])
        splits.test = ArrayDataset(splits.test.x[:500], splits.test.y[:500])
        sizes, grid, h_seeds, s_seeds = SIZES[:2], GRID[:2], [0, 1], [0, 1]
        h_epochs, s_epochs, subset = 2, 2, 1000
        cache = cache.with_name(cache.name + "-quick")
        out_path = cache / "netaug_fashion_mnist_quick.json"
        plot_path = cache / "netaug_size_sweep.png"
    cache.mkdir(parents=True, exist_ok=True)
    sub_idx = np.sort(np.random.default_rng(0).permutation(len(splits.train))[:subset])
    sub = ArrayDataset(splits.train.x[sub_idx], splits.train.y[sub_idx])
    common = {"lr": args.lr, "batch_size": args.batch_size}

    def spec(channels: list[int], method: str, params: dict, seed: int, epochs: int, data: str) -> dict:
        return {"channels": list(channels), "method": method, "params": params, "seed": seed,
                "epochs": epochs, "data": data, **common}  # fmt: skip

    report: dict[str, Any] = {
        "benchmark": "NetAug (Cai et al., ICLR 2022): gain on a tiny CNN vs size, Fashion-MNIST",
        "quick": args.quick,
        "device": "cpu",
        "machine": machine(),
        "dataset": {
            "name": "fashion-mnist",
            "train": len(splits.train),
            "val": len(splits.val),
            "test": len(splits.test),
            "val_split": "10% of the 60k training images, stratified, seed 0",
            "subset": {
                "n": len(sub),
                "how": "first N of a seed-0 permutation of the 54k training split",
                "used_by": ["tune", "sweep"],
            },
        },
        "student": {
            "model": "cnn (TinyCNN)",
            "depthwise": False,
            "headline_channels": HEADLINE,
            "description": "3x3 conv c1 -> 3x3 conv c2 (s2) -> 3x3 conv c3 (s2), BN+ReLU, global avg "
            "pool, linear; NetAug exports the same plain model",
        },
        "training": {
            "engine": "edgekd.distill.train.Trainer via build_method",
            "optimizer": "adam",
            "lr": args.lr,
            "schedule": "cosine per epoch",
            "batch_size": args.batch_size,
            "headline_epochs": h_epochs,
            "sweep_epochs": s_epochs,
            "netaug": {
                "aug_fraction": AUG_FRACTION,
                "bn_recalibration": "base model, 2000 training images, after the last epoch",
                "augmented_bn": "batch statistics",
            },
        },
        "paper": PAPER,
        "phases": {},
    }

    used: dict[str, float] = {}  # run key -> its training wall time (cached runs included)

    def save() -> None:
        report["wall_s"] = round(time.perf_counter() - t_start, 1)
        report["runs_wall_s_total"] = round(sum(used.values()), 1)
        report["runs"] = len(used)
        atomic_write_json(out_path, report)

    def log(r: dict[str, Any]) -> None:
        print(f"{r['data']:>8} {str(r['channels']):>14} {r['method']:>10} seed={r['seed']} ep={r['epochs']} "
              f"train={r['train_acc']:.2f} val={r['val_acc']:.2f} test={r['test_acc']:.2f} "
              f"({r['wall_s']:.0f}s, {r['s_per_epoch']:.1f} s/epoch)", flush=True)  # fmt: skip

    def run(s: dict[str, Any]) -> dict[str, Any]:
        r = train_one(s, splits, sub if s["data"] == "subset" else splits.train, cache)
        used[r["key"]] = r["wall_s"]
        log(r)
        return r

    # 1. tune NetAug on the validation split (headline CNN, seed 0, the subset)
    best = {"width_mults": GRID[0]["width_mults"], "alpha": GRID[0]["alpha"]}
    if "tune" in args.phases:
        base = run(spec(HEADLINE, "supervised", {}, 0, s_epochs, "subset"))
        tried = [
            {"method": "baseline", "params": {}, "val_acc": base["val_acc"], "train_acc": base["train_acc"]}
        ]
        report["sweep"] = {"judged_on": "val (6k held out of the training set); test never used to choose",
                           "channels": HEADLINE, "seed": 0, "data": "subset", "epochs": s_epochs,
                           "tried": tried}  # fmt: skip
        for g in grid:
            r = run(spec(HEADLINE, "netaug", {**g, "aug_fraction": AUG_FRACTION}, 0, s_epochs, "subset"))
            tried.append({"method": "netaug", "params": r["params"], "val_acc": r["val_acc"],
                          "train_acc": r["train_acc"]})  # fmt: skip
            save()
        top = max(tried[1:], key=lambda t: t["val_acc"])
        best = {"width_mults": top["params"]["width_mults"], "alpha": top["params"]["alpha"]}
        report["sweep"]["chosen"] = {**best, "val_acc": top["val_acc"], "baseline_val_acc": base["val_acc"]}
        save()
    netaug = {**best, "aug_fraction": AUG_FRACTION}
    report["training"]["netaug"]["chosen"] = netaug

    # 2. headline: the underfitting tiny CNN, full training split, 3 seeds
    headline: dict[str, Any] | None = None
    if "headline" in args.phases:
        rows_b, rows_n = [], []
        for seed in h_seeds:
            rows_b.append(run(spec(HEADLINE, "supervised", {}, seed, h_epochs, "full")))
            rows_n.append(run(spec(HEADLINE, "netaug", netaug, seed, h_epochs, "full")))
            headline = {"channels": HEADLINE, "params": n_params(HEADLINE, splits), "train_n": len(splits.train),
                        "epochs": h_epochs, **summarise(rows_b, rows_n)}  # fmt: skip
            report["phases"]["headline"] = headline
            save()
        assert headline is not None
        spread = max(headline["baseline_test_acc"][1], headline["netaug_test_acc"][1])
        headline["goal"] = {
            "rule": "NetAug mean test accuracy above the baseline's by more than the seed spread "
            "(the larger of the two test-accuracy stds over seeds)",
            "gain": headline["gain"][0],
            "seed_spread": round(spread, 2),
            "met": headline["gain"][0] > spread,
            "underfits": headline["baseline_train_acc"][0] < 95.0,
        }
        # the same comparison at half the epochs, where those runs are cached (not trained here)
        short = [cached(spec(HEADLINE, m, p, seed, h_epochs // 2, "full"), cache)
                 for seed in h_seeds for m, p in (("supervised", {}), ("netaug", netaug))]  # fmt: skip
        if all(short):
            headline["half_epochs"] = {"epochs": h_epochs // 2, **summarise(short[0::2], short[1::2])}
        report["phases"]["headline"] = headline
        save()

    def convergence() -> None:
        """Baseline, seed 0, at half / the headline's / twice the headline's epochs."""
        if headline is None:
            return
        b0 = run(spec(HEADLINE, "supervised", {}, 0, h_epochs, "full"))
        long = run(spec(HEADLINE, "supervised", {}, 0, 2 * h_epochs, "full"))
        half = cached(spec(HEADLINE, "supervised", {}, 0, h_epochs // 2, "full"), cache)
        long_n = run(spec(HEADLINE, "netaug", netaug, 0, 2 * h_epochs, "full"))  # one seed: CPU budget
        pts = [r for r in (half, b0, long) if r]
        headline["convergence"] = {
            "rule": "converged when doubling the epochs changes the seed-0 baseline's test accuracy by less "
            "than the headline's seed spread",
            "baseline_seed0": [{k: r[k] for k in ("epochs", "train_acc", "val_acc", "test_acc", "wall_s")}
                               for r in pts],
            "test_change_when_doubling": round(long["test_acc"] - b0["test_acc"], 2),
            "train_change_when_doubling": round(long["train_acc"] - b0["train_acc"], 2),
            "converged": abs(long["test_acc"] - b0["test_acc"]) < max(headline["goal"]["seed_spread"], 0.1),
            "netaug_seed0_at_double_epochs": {k: long_n[k] for k in ("epochs", "train_acc", "val_acc", "test_acc",
                                                                    "wall_s")},
            "gain_seed0_at_double_epochs": round(long_n["test_acc"] - long["test_acc"], 2),
            "baseline_seed0_curve": b0["curve"],
            "netaug_seed0_curve": run(spec(HEADLINE, "netaug", netaug, 0, h_epochs, "full"))["curve"],
        }  # fmt: skip
        save()

    # 3. size sweep on the subset
    if "sweep" in args.phases:
        points: list[dict[str, Any]] = []
        report["phases"]["size_sweep"] = points
        done: dict[int, tuple[list, list]] = {i: ([], []) for i in range(len(sizes))}
        for seed in s_seeds:  # seed-major: a whole one-seed curve first
            for i, ch in enumerate(sizes):
                if n_params(ch, splits) > 50_000 and seed not in s_seeds[: args.large_seeds]:
                    continue
                done[i][0].append(run(spec(ch, "supervised", {}, seed, s_epochs, "subset")))
                done[i][1].append(run(spec(ch, "netaug", netaug, seed, s_epochs, "subset")))
                points[:] = [
                    {"channels": sizes[j], "params": n_params(sizes[j], splits), "train_n": len(sub),
                     "epochs": s_epochs, **summarise(b, n)}
                    for j, (b, n) in done.items() if b
                ]  # fmt: skip
                save()
                plot(points, headline, plot_path)
            if seed == s_seeds[0]:
                convergence()
        pos = [p["params"] for p in points if p["gain"][0] > p["gain"][1]]
        neg = [p["params"] for p in points if p["gain"][0] < 0]
        report["sweep_reading"] = {
            "gain_above_its_std_at_params": pos,
            "gain_negative_at_params": neg,
            "first_negative_params": min(neg) if neg else None,
        }
        report["plot"] = (
            str(plot_path.relative_to(REPO)) if plot_path.is_relative_to(REPO) else str(plot_path)
        )
    if "sweep" not in args.phases:
        convergence()
    report["complete"] = all(p in args.phases for p in ("tune", "headline", "sweep"))
    save()
    _table(report)
    print(f"wrote {out_path} in {time.perf_counter() - t_start:.0f}s")


def _table(report: dict[str, Any]) -> None:
    rows = []
    ph = report["phases"]
    pts = ([("headline", ph["headline"])] if "headline" in ph else []) + [
        ("sweep", p) for p in ph.get("size_sweep", [])
    ]
    for name, p in pts:
        f = lambda v: f"{v[0]:.2f} ± {v[1]:.2f}"  # noqa: E731
        rows.append([name, p["channels"], p["params"], p["train_n"], f(p["baseline_train_acc"]),
                     f(p["baseline_test_acc"]), f(p["netaug_test_acc"]), f(p["gain"]), len(p["seeds"])])  # fmt: skip
    print_table("Fashion-MNIST, TinyCNN: NetAug vs baseline (test top-1 %, mean ± std over seeds)",
                ["run", "channels", "params", "train imgs", "base train acc", "baseline test", "NetAug test",
                 "gain (paired)", "seeds"], rows)  # fmt: skip


if __name__ == "__main__":
    main()
