"""SMD reconstruction baseline BEFORE the distillation-engine integration: a plain PyTorch loop.

    python benchmarks/smd_baseline.py [--machines machine-1-6 ...] [--data-dir DIR] [--epochs 8]

Trains, on each machine alone, the LSTM-autoencoder teacher (``lstm-ae`` hidden 64, latent 32)
and the MCU-sized students on reconstruction only (no distillation): ``fc-ae`` (hidden 64,
latent 16) and ``conv1d-ae`` (channels 32/16, latent 16). Windows of 32 steps, training stride 4,
validation = the last 30% of the training series, min-max statistics from the rest. Anomaly
score per test step: the squared reconstruction error averaged over the 38 metrics, then over
every window covering the step (``edgekd.data.windows.step_scores``, stride 1).

Reported per machine and as the mean (``edgekd.metrics.anomaly``): F1 with the best threshold on
the test labels (``f1_best``: what the SMD literature reports, an upper bound), F1 with the
threshold fixed on validation (``f1_val``: the 0.99 quantile of validation scores), both also
point-adjusted (``f1_pa_*``, inflated by construction), and ROC AUC. Writes
benchmarks/results/smd_baseline.json. Seed reference (28 machines, LSTM-AE, point-wise best F1):
teacher 0.4031.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _common import machine, mean_std, print_table, write_results  # noqa: E402

from edgekd.data.smd import list_machines, load_smd  # noqa: E402
from edgekd.data.windows import step_scores  # noqa: E402
from edgekd.metrics.anomaly import anomaly_report, mean_report  # noqa: E402
from edgekd.models import build_model  # noqa: E402

MODELS = {
    "teacher lstm-ae": ("lstm-ae", {"hidden": 64, "latent": 32}),
    "student fc-ae": ("fc-ae", {"hidden": [64], "latent": 16}),
    "student conv1d-ae": ("conv1d-ae", {"channels": [32, 16], "latent": 16}),
}


@torch.no_grad()
def position_errors(model: torch.nn.Module, windows: np.ndarray, batch: int = 512) -> np.ndarray:
    """Squared reconstruction error averaged over features: ``(N, length)``."""
    model.eval()
    out = []
    for i in range(0, len(windows), batch):
        x = torch.from_numpy(np.ascontiguousarray(windows[i : i + batch]))
        out.append(((model(x) - x) ** 2).mean(dim=2).numpy())
    return np.concatenate(out)


def train(model: torch.nn.Module, windows: np.ndarray, epochs: int, lr: float, seed: int) -> list[float]:
    g = torch.Generator().manual_seed(seed)
    data = torch.from_numpy(np.ascontiguousarray(windows))
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs * ((len(data) + 127) // 128))
    losses = []
    for _ in range(epochs):
        model.train()
        total = 0.0
        for idx in torch.randperm(len(data), generator=g).split(128):
            x = data[idx]
            loss = torch.nn.functional.mse_loss(model(x), x)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
        losses.append(total / len(data))
    return losses


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--machines", nargs="+", default=None, help="default: every machine found")
    ap.add_argument("--data-dir", default=None, help="folder holding smd/ (default $EDGEKD_DATA_DIR)")
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--length", type=int, default=32)
    ap.add_argument("--stride", type=int, default=4)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    args = ap.parse_args()
    if args.data_dir:
        os.environ["EDGEKD_DATA_DIR"] = args.data_dir
    names = args.machines or list_machines()
    torch.set_num_threads(int(os.environ.get("EDGEKD_THREADS", "1")))
    per_machine: dict[str, dict] = {}
    for name in names:
        data = load_smd(name, length=args.length, stride=args.stride)
        m = data.machines[0]
        x_fit, _, _ = data.windows("fit")
        x_val, val_starts, _ = data.windows("val", copy=False)
        x_test, test_starts, _ = data.windows("test", copy=False)
        per_machine[name] = {}
        for label in args.models:
            model_name, kw = MODELS[label]
            torch.manual_seed(args.seed)
            model = build_model(model_name, input_shape=[args.length, data.num_features], **kw)
            t0 = time.perf_counter()
            losses = train(model, x_fit, args.epochs, args.lr, args.seed)
            train_s = time.perf_counter() - t0
            val_scores = step_scores(position_errors(model, x_val), val_starts, len(m.val))
            test_scores = step_scores(position_errors(model, x_test), test_starts, len(m.test))
            rep = anomaly_report(test_scores, m.labels, val_scores)
            rep.update(params=sum(p.numel() for p in model.parameters()), train_s=train_s,
                       final_train_mse=losses[-1], val_mse=float(val_scores.mean()))  # fmt: skip
            per_machine[name][label] = rep
            print(f"{name} {label}: f1_best {rep['f1_best']:.4f} f1_val {rep['f1_val']:.4f} "
                  f"f1_pa_best {rep['f1_pa_best']:.4f} auc {rep['auc']:.4f} ({train_s:.0f} s)", flush=True)  # fmt: skip
    rows = []
    for label in args.models:
        mean = mean_report([per_machine[n][label] for n in names])
        rows.append({"method": f"{label} (plain reconstruction)", "model": MODELS[label][0],
                     "kwargs": MODELS[label][1], **{k: mean[k] for k in (
                         "f1_best", "f1_val", "f1_pa_best", "f1_pa_val", "auc", "p_best", "r_best",
                         "p_val", "r_val")}, "params": per_machine[names[0]][label]["params"],
                     "f1_best_std_over_machines": mean_std([per_machine[n][label]["f1_best"] for n in names])[1],
                     "per_machine": {n: per_machine[n][label] for n in names}})  # fmt: skip
    out = {
        "benchmark": "smd_baseline",
        "label": "baseline before the distillation-engine integration (plain torch loop, reconstruction only)",
        "machines": names,
        "setting": {
            "length": args.length,
            "stride": args.stride,
            "test_stride": 1,
            "val_fraction": 0.3,
            "normalise": "minmax (fit part)",
            "epochs": args.epochs,
            "lr": args.lr,
            "batch": 128,
            "optimizer": "adam + cosine",
            "seed": args.seed,
            "score": "mean over windows of the per-step MSE over metrics",
            "val_threshold": "0.99 quantile of validation step scores",
        },  # fmt: skip
        "seed_paper": {"teacher_f1_best_pointwise_28_machines": 0.4031},
        "rows": rows,
        "machine": machine(),
    }
    path = write_results("smd_baseline", out)
    print_table(
        f"SMD baseline (mean over {len(names)} machines: {', '.join(names)}); plain reconstruction, no distillation",
        ["method", "params", "F1 best", "F1 val-thr", "F1 PA best", "F1 PA val-thr", "AUC"],
        [
            [
                r["method"],
                r["params"],
                f"{r['f1_best']:.4f}",
                f"{r['f1_val']:.4f}",
                f"{r['f1_pa_best']:.4f}",
                f"{r['f1_pa_val']:.4f}",
                f"{r['auc']:.4f}",
            ]
            for r in rows
        ],  # fmt: skip
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
