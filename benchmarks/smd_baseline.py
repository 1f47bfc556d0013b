"""SMD reconstruction baseline BEFORE the distillation-engine integration: a plain PyTorch loop.

    python benchmarks/smd_baseline.py [--machines machine-1-6 ...] [--data-dir DIR] [--epochs 8]
                                      [--seeds 0 1] [--sequential [--alpha 0.5 --fraction 0.5]] [--sensors]

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
teacher 0.4031, noisy student-1 0.4171, student-2 0.4182, noisy ensemble of 3 0.4241.

``--sequential`` adds a preview of the issue's chain with the same loop and
``edgekd.timeseries.sequential.noisy_sequential_loss`` (NOT the engine's Born-Again scheme, which
replaces it): LSTM-AE generations 1-3 with noise (p = ``--fraction`` of each batch, sigma 0.05)
and without, generation i >= 2 learning from generation i-1 with weight a = ``--alpha``; the mean
reconstruction of generations 1-2 and 1-3 as scorers; and the fc-ae student distilled (a, no noise)
from the teacher and from the noisy ensemble of 3. Every network gets its own initialisation.

``--sensors [i ...]`` adds the privileged-sensor preview: an fc-ae student that sees only those
metrics (default every 4th: 10 of 38) trained alone, and the same student trained with
(1 - a) * MSE(x_sub, f(x_sub)) + a * MSE(f(x_sub), teacher(x_all)[sensors]), the 38-metric LSTM
teacher's reconstruction of its sensors; both scored on their own sensors only.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _common import machine, mean_std, print_table, write_results  # noqa: E402

from edgekd.data.smd import SmdData, list_machines, load_smd  # noqa: E402
from edgekd.data.windows import step_scores  # noqa: E402
from edgekd.metrics.anomaly import anomaly_report, mean_report  # noqa: E402
from edgekd.models import build_model  # noqa: E402
from edgekd.timeseries.scoring import module_predictor, position_errors  # noqa: E402
from edgekd.timeseries.sequential import ensemble_reconstruction, noisy_sequential_loss  # noqa: E402

MODELS = {
    "teacher lstm-ae": ("lstm-ae", {"hidden": 64, "latent": 32}),
    "student fc-ae": ("fc-ae", {"hidden": [64], "latent": 16}),
    "student conv1d-ae": ("conv1d-ae", {"channels": [32, 16], "latent": 16}),
}


def reconstruct_all(model: Callable[[torch.Tensor], torch.Tensor], windows: np.ndarray) -> torch.Tensor:
    """``model(x)`` for every window (a fixed teacher's targets), in batches."""
    with torch.no_grad():
        return torch.cat([model(torch.from_numpy(np.ascontiguousarray(windows[i : i + 512])))
                          for i in range(0, len(windows), 512)])  # fmt: skip


def train(
    model: torch.nn.Module,
    windows: np.ndarray,
    epochs: int,
    lr: float,
    seed: int,
    *,
    previous: torch.Tensor | None = None,
    alpha: float = 0.0,
    fraction: float = 0.0,
) -> list[float]:
    """Adam + cosine on ``noisy_sequential_loss``; alpha = fraction = 0 is plain reconstruction."""
    g = torch.Generator().manual_seed(seed)
    noise_g = torch.Generator().manual_seed(seed + 1000)
    data = torch.from_numpy(np.ascontiguousarray(windows))
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs * ((len(data) + 127) // 128))
    losses = []
    for _ in range(epochs):
        model.train()
        total = 0.0
        for idx in torch.randperm(len(data), generator=g).split(128):
            prev = previous[idx] if previous is not None else None
            loss = noisy_sequential_loss(
                model, data[idx], prev, alpha=alpha, fraction=fraction, generator=noise_g
            )
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
        losses.append(total / len(data))
    return losses


def evaluate(models: list[torch.nn.Module], data: SmdData, wins: dict) -> dict:
    """The anomaly report of the models' mean reconstruction on the (single) machine."""
    m = data.machines[0]
    predict = module_predictor([net.eval() for net in models])
    val_scores = step_scores(position_errors(predict, wins["val"][0]), wins["val"][1], len(m.val))
    test_scores = step_scores(position_errors(predict, wins["test"][0]), wins["test"][1], len(m.test))
    rep = anomaly_report(test_scores, m.labels, val_scores)
    rep["val_mse"] = float(val_scores.mean())
    return rep


def windows_of(data: SmdData) -> dict[str, Any]:
    x_fit, _, _ = data.windows("fit")
    wins = {part: data.windows(part, copy=False)[:2] for part in ("val", "test")}
    return {"data": data, "x_fit": x_fit, "wins": wins, "shape": [data.length, data.num_features]}


def run_machine(name: str, seed: int, args: argparse.Namespace) -> dict[str, dict]:
    """Every row's report for one machine and seed (``label -> report``)."""
    full = windows_of(load_smd(name, length=args.length, stride=args.stride))
    x_fit = full["x_fit"]
    out: dict[str, dict] = {}
    nets: dict[str, torch.nn.Module] = {}

    def fit(label: str, model_key: str, part: dict[str, Any] = full, **loss: Any) -> torch.nn.Module:
        model_name, kw = MODELS[model_key]
        torch.manual_seed(1000 * seed + len(nets))  # every network (each generation) its own init
        model = build_model(model_name, input_shape=part["shape"], **kw)
        t0 = time.perf_counter()
        losses = train(model, part["x_fit"], args.epochs, args.lr, seed, **loss)
        rep = evaluate([model], part["data"], part["wins"])
        rep.update(params=sum(p.numel() for p in model.parameters()), train_s=time.perf_counter() - t0,
                   final_train_loss=losses[-1])  # fmt: skip
        out[label] = rep
        nets[label] = model
        print(f"{name} seed {seed} {label}: f1_best {rep['f1_best']:.4f} f1_val {rep['f1_val']:.4f} "
              f"f1_pa_best {rep['f1_pa_best']:.4f} auc {rep['auc']:.4f} ({rep['train_s']:.0f} s)", flush=True)  # fmt: skip
        return model

    def teacher() -> torch.nn.Module:
        label = "teacher lstm-ae (plain reconstruction)"
        return nets[label] if label in nets else fit(label, "teacher lstm-ae")

    for key in args.models:
        fit(f"{key} (plain reconstruction)", key)
    a, p = args.alpha, args.fraction
    if args.sensors:
        sub = args.sensors
        part = windows_of(load_smd(name, length=args.length, stride=args.stride, features=sub))
        k = len(sub)
        fit(f"fc-ae on {k} of 38 metrics alone", "student fc-ae", part)
        prev = reconstruct_all(teacher(), x_fit)[:, :, sub]
        fit(f"fc-ae on {k} of 38 metrics, distilled from the 38-metric teacher (a={a})", "student fc-ae", part,
            previous=prev, alpha=a)  # fmt: skip
    if not args.sequential:
        return out
    chains = {
        "noisy": fit(f"lstm-ae gen1 noisy (p={p})", "teacher lstm-ae", fraction=p),
        "no noise": teacher(),
    }
    gens: dict[str, list[torch.nn.Module]] = {k: [v] for k, v in chains.items()}
    for kind, frac in (("noisy", p), ("no noise", 0.0)):
        for k in (2, 3):
            prev = reconstruct_all(gens[kind][-1], x_fit)
            gens[kind].append(fit(f"lstm-ae gen{k} {kind} (a={a}, p={frac})", "teacher lstm-ae",
                                  previous=prev, alpha=a, fraction=frac))  # fmt: skip
        for n in (2, 3):
            ens = gens[kind][:n]
            rep = evaluate(ens, full["data"], full["wins"])
            rep["params"] = sum(p_.numel() for g in ens for p_ in g.parameters())
            out[f"ensemble gen1-{n} {kind} (mean reconstruction)"] = rep
    ens3 = gens["noisy"]
    for label, prev in (("teacher", reconstruct_all(teacher(), x_fit)),
                        ("noisy ensemble of 3", reconstruct_all(lambda x: ensemble_reconstruction(ens3, x), x_fit))):  # fmt: skip
        fit(f"fc-ae distilled from {label} (a={a})", "student fc-ae", previous=prev, alpha=a)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--machines", nargs="+", default=None, help="default: every machine found")
    ap.add_argument("--data-dir", default=None, help="folder holding smd/ (default $EDGEKD_DATA_DIR)")
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--length", type=int, default=32)
    ap.add_argument("--stride", type=int, default=4)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    ap.add_argument("--sequential", action="store_true", help="add the plain-loop preview of the noisy chain")
    ap.add_argument("--alpha", type=float, default=0.5, help="weight a of the previous generation")
    ap.add_argument("--fraction", type=float, default=0.5, help="fraction p of noisy samples per batch")
    ap.add_argument("--sensors", type=int, nargs="*", default=None,
                    help="privileged-sensor rows: the student sees only these 0-based metrics "
                    "(flag alone: every 4th, 0 4 ... 36); the teacher sees all 38")  # fmt: skip
    args = ap.parse_args()
    if args.sensors is not None and not args.sensors:
        args.sensors = list(range(0, 38, 4))
    if args.data_dir:
        os.environ["EDGEKD_DATA_DIR"] = args.data_dir
    names = args.machines or list_machines()
    torch.set_num_threads(int(os.environ.get("EDGEKD_THREADS", "1")))
    start = time.perf_counter()
    reports = {(n, s): run_machine(n, s, args) for s in args.seeds for n in names}
    labels = list(reports[(names[0], args.seeds[0])])
    keys = ("f1_best", "f1_val", "f1_pa_best", "f1_pa_val", "auc", "p_best", "r_best", "p_val", "r_val")
    rows = []
    for label in labels:
        per_seed = [mean_report([reports[(n, s)][label] for n in names]) for s in args.seeds]
        row: dict[str, Any] = {"method": label, **{k: mean_std([r[k] for r in per_seed])[0] for k in keys}}
        row["f1_best_std_over_seeds"] = mean_std([r["f1_best"] for r in per_seed])[1]
        row["auc_std_over_seeds"] = mean_std([r["auc"] for r in per_seed])[1]
        row["params"] = reports[(names[0], args.seeds[0])][label]["params"]
        row["per_machine"] = {n: {k: mean_std([reports[(n, s)][label][k] for s in args.seeds])[0] for k in keys}
                              for n in names}  # fmt: skip
        rows.append(row)
    out = {
        "benchmark": "smd_baseline",
        "label": "baseline before the distillation-engine integration: plain torch loop; the sequential rows "
        "(--sequential) use edgekd.timeseries.sequential directly, not the engine's Born-Again scheme",
        "machines": names,
        "seeds": args.seeds,
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
            "alpha": args.alpha,
            "fraction": args.fraction,
            "sigma": 0.05,
            "score": "mean over covering windows of the per-step MSE over metrics",
            "val_threshold": "0.99 quantile of validation step scores",
            "models": MODELS,
        },  # fmt: skip
        "seed_paper": {
            "f1_best_pointwise_28_machines": {
                "teacher": 0.4031,
                "noisy student-1": 0.4171,
                "student-2": 0.4182,
                "noisy ensemble of 3": 0.4241,
            }
        },  # fmt: skip
        "rows": rows,
        "wall_s": time.perf_counter() - start,
        "machine": machine(),
    }
    path = write_results("smd_baseline", out)
    print_table(
        f"SMD, mean over {len(names)} machines x {len(args.seeds)} seeds (std over seeds); plain torch loop",
        ["method", "params", "F1 best", "F1 val-thr", "F1 PA best", "F1 PA val-thr", "AUC"],
        [
            [
                r["method"],
                r["params"],
                f"{r['f1_best']:.4f} ± {r['f1_best_std_over_seeds']:.4f}",
                f"{r['f1_val']:.4f}",
                f"{r['f1_pa_best']:.4f}",
                f"{r['f1_pa_val']:.4f}",
                f"{r['auc']:.4f} ± {r['auc_std_over_seeds']:.4f}",
            ]
            for r in rows
        ],  # fmt: skip
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
