"""Export accuracy benchmark: float vs int8 accuracy (LiteRT and TFLite Micro), flash, arena, export time.

Models: the Hinton MNIST student (784-800-800-10) and a tiny Fashion-MNIST CNN. Without ``--hinton-run`` /
``--cnn-run`` each is trained briefly here (plain Adam loop) into a temporary run folder. Each run is
exported to the generic ``tflite-micro`` target; TFLite Micro runs the whole test split.

    EDGEKD_DATA_DIR=/work/shared/datasets .venv/bin/python benchmarks/export_accuracy.py

Writes ``benchmarks/results/export_accuracy.json``. Goals: int8 within 0.5 points of float, a tiny CNN
exported to tflite-micro in under 60 s.
"""

from __future__ import annotations

import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import click

os.environ.setdefault(
    "EDGEKD_DATA_DIR", str(Path(__file__).resolve().parents[1].parent / "shared" / "datasets")
)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

RESULTS = Path(__file__).resolve().parent / "results" / "export_accuracy.json"
MODELS = {
    "hinton-student-mnist": {"data": "mnist", "model": "hinton-student", "kwargs": {}, "epochs": 2, "lr": 1e-3},
    "tiny-cnn-fashion-mnist": {"data": "fashion-mnist", "model": "cnn",
                               "kwargs": {"channels": [8, 16, 32], "width": 1.0}, "epochs": 2, "lr": 3e-3},
}  # fmt: skip


def train_run(key: str, root: Path, seed: int = 0) -> tuple[Path, float]:
    """Train ``MODELS[key]`` briefly and save it as a run folder (model.pt + data.json)."""
    import torch
    from torch import nn

    from edgekd.data import load_data
    from edgekd.models import build_model, save_model

    spec = MODELS[key]
    splits = load_data(spec["data"], seed=seed)
    kw = {"input_shape": list(splits.input_shape), "num_classes": splits.num_classes, **spec["kwargs"]}
    torch.manual_seed(seed)
    model = build_model(spec["model"], **kw)
    opt = torch.optim.Adam(model.parameters(), spec["lr"])
    x, y = torch.from_numpy(splits.train.x), torch.from_numpy(splits.train.y)
    t0 = time.perf_counter()
    g = torch.Generator().manual_seed(seed)
    for _ in range(spec["epochs"]):
        model.train()
        perm = torch.randperm(len(y), generator=g)
        for i in range(0, len(y), 128):
            idx = perm[i : i + 128]
            loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    run = root / key
    run.mkdir(parents=True, exist_ok=True)
    save_model(run / "model.pt", model, spec["model"], kw)
    (run / "data.json").write_text(json.dumps(splits.describe()))
    return run, time.perf_counter() - t0


def bench_one(key: str, run: Path, train_s: float | None) -> dict[str, Any]:
    from edgekd.export import export_run

    t0 = time.perf_counter()
    out = export_run(
        run, target="tflite-micro", out=run / "export" / "tflite-micro", tflm_samples=10**9, quiet=True
    )
    wall = time.perf_counter() - t0
    rec = json.loads((out / "export.json").read_text())
    c = rec["checks"]
    arena = rec["micro"]["arena"]["tflm"]
    return {
        "model": key,
        "run": str(run),
        "train_seconds": None if train_s is None else round(train_s, 1),
        "test_samples": c["eval_samples"],
        "float_accuracy": c["float_accuracy"],
        "tflite_fp32_accuracy": c["tflite_fp32_accuracy"],
        "int8_accuracy_tflm": c["int8_accuracy"],  # the headline: TFLite Micro, as on the board
        "int8_accuracy_litert": c["litert_int8_accuracy"],
        "int8_accuracy_litert_reference_kernels": c["litert_reference_int8_accuracy"],
        "tflm_samples": c["tflm_samples"],
        "int8_drop_points": round(100 * (c["float_accuracy"] - c["int8_accuracy"]), 3),
        "int8_top1_agreement_tflm": c["int8_top1_agreement"],
        "tflm_vs_litert_agreement": c["tflm_vs_litert_agreement"],
        "tflm_vs_litert_reference_kernels_agreement": c["tflm_vs_litert_reference_kernels_agreement"],
        "fp32_max_abs_diff": c["fp32_max_abs_diff"],
        "flash_bytes": rec["tflite"]["int8"]["bytes"],
        "arena_bytes": arena["total"],
        "arena_head_bytes": arena["head"],
        "arena_tail_bytes": arena["tail"],
        "export_wall_seconds": round(wall, 2),
        "export_wall_seconds_note": "whole export incl. checks on the full test split (LiteRT fp32+int8, TFLM); "
        "the first export in the process also pays the TensorFlow/onnx exporter imports",
        "goal_int8_within_0_5_points": abs(c["float_accuracy"] - c["int8_accuracy"]) <= 0.005,
    }


@click.command()
@click.option(
    "--hinton-run", type=click.Path(exists=True, file_okay=False), help="Existing Hinton student run."
)
@click.option(
    "--cnn-run", type=click.Path(exists=True, file_okay=False), help="Existing Fashion-MNIST CNN run."
)
@click.option("--out", type=click.Path(dir_okay=False), default=str(RESULTS), show_default=True)
def main(hinton_run: str | None, cnn_run: str | None, out: str) -> None:
    """Train (if needed), export to tflite-micro and compare float vs int8 accuracy."""
    import torch
    from rich.console import Console
    from rich.table import Table

    torch.set_num_threads(min(2, os.cpu_count() or 1))
    console = Console(width=max(110, Console().width))
    rows = []
    with tempfile.TemporaryDirectory(prefix="edgekd-bench-") as tmp:
        for key, given in (("hinton-student-mnist", hinton_run), ("tiny-cnn-fashion-mnist", cnn_run)):
            if given:
                run, train_s = Path(given), None
            else:
                console.print(f"training {key} ({MODELS[key]['epochs']} epochs)...")
                run, train_s = train_run(key, Path(tmp))
            console.print(f"exporting {key} to tflite-micro...")
            rows.append(bench_one(key, run, train_s))
    result = {
        "benchmark": "export_accuracy",
        "target": "tflite-micro",
        "host": {"machine": platform.machine(), "python": platform.python_version(), "cpus": os.cpu_count()},
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "goals": {"int8_within_points_of_float": 0.5, "tiny_cnn_export_seconds": 60},
        "results": rows,
    }
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(result, indent=2) + "\n")
    table = Table(title="export accuracy (tflite-micro, full test split)")
    for col in ("model", "float", "int8 LiteRT", "int8 TFLM", "drop (pts)", "flash B", "arena B", "export s"):
        table.add_column(col, justify="left" if col == "model" else "right", no_wrap=True)
    for r in rows:
        table.add_row(r["model"], f"{100 * r['float_accuracy']:.2f}%", f"{100 * r['int8_accuracy_litert']:.2f}%",
                      f"{100 * r['int8_accuracy_tflm']:.2f}%", f"{r['int8_drop_points']:.2f}",
                      f"{r['flash_bytes']:,}", f"{r['arena_bytes']:,}", f"{r['export_wall_seconds']:.1f}")  # fmt: skip
    console.print(table)
    console.print(f"wrote {out}")


if __name__ == "__main__":
    main()
