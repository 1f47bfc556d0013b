"""Converter bake-off: onnx2tf vs litert-torch on a zoo of TinyML networks, int8 on TFLite Micro.

The zoo is the one the tests build (``tests/test_export_zoo.py``: DS-CNN, ResNet-8, MobileNetV3 SE block with
hardswish/hardsigmoid, Conv1d, LSTM, GRU, FC autoencoder), random weights. Each network is exported to the
``tflite-micro`` target by each route alone (``--route``, no fallback), calibrated on the same 120 inputs and
judged on 30 other inputs. Per route and network: success (or the one-line error), int8 against float on
TFLite Micro (top-1 agreement, or SQNR and anomaly-score rank correlation for the autoencoder), TFLM arena,
flash, ops, conversion time and whole-export time (checks included).

    .venv/bin/python benchmarks/converter_bakeoff.py        # litert-torch needs: pip install '.[litert]'

Writes ``benchmarks/results/converter_bakeoff.json`` and prints a table.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests"), str(REPO / "benchmarks")]

ROUTES = ("onnx2tf", "litert-torch")


def zoo() -> dict[str, tuple[Any, tuple[int, ...]]]:
    from test_export_zoo import ZOO, FCAutoencoder  # the networks the tests build

    zoo = {**ZOO, "fc_autoencoder": (FCAutoencoder, (640,))}
    for name in ("lstm", "gru"):  # the issue's shape: 20 steps x 8 features (the tests use 12 steps)
        zoo[name] = (zoo[name][0], (20, 8))
    return zoo


def run_one(name: str, factory: Any, shape: tuple[int, ...], route: str, folder: Path) -> dict[str, Any]:
    import numpy as np
    import torch

    from edgekd.export import export_run

    torch.manual_seed(0)
    model = factory().eval()
    x = np.random.default_rng(1).standard_normal((150, *shape)).astype(np.float32)
    task = "reconstruction" if name == "fc_autoencoder" else "classification"
    calib, ev = folder / f"{name}_calib.npz", folder / f"{name}_eval.npz"
    np.savez(calib, x=x[:120], task=np.array(task))
    np.savez(ev, x=x[120:], task=np.array(task))
    row: dict[str, Any] = {"model": name, "route": route, "input_shape": list(shape)}
    t0 = time.perf_counter()
    try:
        out = export_run(model, input_shape=shape, target="tflite-micro", calibration=calib, eval_data=ev,
                           route=route, out=folder / f"{name}_{route}", quiet=True)  # fmt: skip
    except Exception as e:  # noqa: BLE001  (a failed route is a result)
        row.update(ok=False, error=str(e).splitlines()[0][:400], export_s=round(time.perf_counter() - t0, 2))
        return row
    rec = json.loads((out / "export.json").read_text())
    c = rec["checks"]
    attempt = next(a for a in rec["route"]["attempts"] if a["route"] == route)
    row.update(
        ok=True,
        export_s=rec["wall_time_s"],
        convert_s=attempt["seconds"],
        int8_top1_agreement_tflm=c.get("int8_top1_agreement"),
        int8_sqnr_db_tflm=c.get("int8_sqnr_db"),
        int8_score_spearman_tflm=c.get("int8_score_spearman"),
        tflm_vs_litert_reference_max_abs_diff=c.get("tflm_vs_litert_reference_kernels_max_abs_diff"),
        arena_bytes=rec["micro"]["arena"]["tflm"]["total"],
        arena_head_bytes=rec["micro"]["arena"]["tflm"]["head"],
        flash_bytes=rec["tflite"]["int8"]["bytes"],
        ops=rec["tflite"]["int8"]["ops"],
        n_ops=len(rec["tflite"]["int8"]["ops"]),
        lowered=[d["op"] for d in rec.get("onnx", {}).get("lowered", [])],
    )
    return row


def main() -> None:
    from _common import machine, print_table, write_results

    from edgekd.export.litert import available

    torch_threads = os.environ.get("OMP_NUM_THREADS")
    rows = []
    with tempfile.TemporaryDirectory(prefix="edgekd-bakeoff-") as d:
        for name, (factory, shape) in zoo().items():
            for route in ROUTES:
                row = run_one(name, factory, shape, route, Path(d))
                rows.append(row)
                print(
                    json.dumps({k: row.get(k) for k in ("model", "route", "ok", "export_s", "error")}),
                    flush=True,
                )
    summary = {}
    for route in ROUTES:
        mine = [r for r in rows if r["route"] == route]
        summary[route] = {"succeeded": sum(r["ok"] for r in mine), "of": len(mine),
                          "failed": [r["model"] for r in mine if not r["ok"]]}  # fmt: skip
    import importlib.metadata as md

    versions = {}
    for pkg in (
        "onnx2tf",
        "litert-torch",
        "ai-edge-quantizer",
        "ai-edge-litert",
        "tflite-micro",
        "tensorflow-cpu",
    ):
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            versions[pkg] = None
    result = {"benchmark": "converter_bakeoff", "machine": machine(), "omp_threads": torch_threads,
              "litert_torch_available": available() or "yes", "versions": versions, "summary": summary, "rows": rows}  # fmt: skip
    path = write_results("converter_bakeoff", result)

    def f(v: Any, spec: str) -> str:
        return "–" if v is None else format(v, spec)

    table = []
    for r in rows:
        quality = (f"agree {f(r.get('int8_top1_agreement_tflm'), '.0%')}" if r.get("int8_top1_agreement_tflm") is not None
                   else f"SQNR {f(r.get('int8_sqnr_db_tflm'), '.1f')} dB, rho {f(r.get('int8_score_spearman_tflm'), '.3f')}")  # fmt: skip
        table.append([r["model"], r["route"], "ok" if r["ok"] else "FAIL (see JSON)",
                      quality if r["ok"] else "–", f(r.get("arena_bytes"), ","), f(r.get("flash_bytes"), ","),
                      f(r.get("n_ops"), "d"), f(r.get("convert_s"), ".1f"), f(r.get("export_s"), ".1f")])  # fmt: skip
    print_table("converter bake-off (int8 on TFLite Micro vs float)",
                ["model", "route", "result", "int8 vs float (TFLM)", "arena B", "flash B", "ops", "convert s", "export s"],
                table)  # fmt: skip
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
