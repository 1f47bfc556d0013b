"""edgekd's C backend vs the TFLite Micro interpreter, side by side, per model.

* RAM: the C backend's model-only Cortex-M4 ELF (``arm-none-eabi-gcc -Os``, hard float): data + bss +
  worst-case stack from GCC's call graph, against TFLite Micro's arena total (head + persistent tail,
  measured with the host ``tflite-micro`` interpreter; the tail is larger on a 64-bit host than on a
  32-bit MCU, so the head alone is also reported as TFLM's lower bound).
* Flash: the C ELF's text + data against the ``.tflite`` flatbuffer TFLM keeps in flash (its
  interpreter and kernel code come on top and are not measured here: TFLM cannot be cross-built offline).
* Host latency: the C model built with host ``gcc -O2`` vs ``tflite_micro``'s interpreter (invoke only).
* Emulated time: ``edgekd bench --emulate`` on QEMU mps2-an386 with ``-icount shift=0``
  (instructions per inference; deterministic, not cycles).
* Bit-exactness: every output byte of the host C build vs TFLM on random inputs, and of the
  emulated board over the serial protocol (the students on their real test samples).

Models: two students trained here for a few hundred steps on scikit-learn's digits and exported with
``edgekd export --target cortex-m4-qemu``, the test models and the MLPerf-Tiny-like architectures of
``edgekd.graph.sample_models``.

Usage: python benchmarks/c_backend_vs_tflm.py [--quick] [--out PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import numpy as np  # noqa: E402
from _common import machine, print_table, write_results  # noqa: E402

from edgekd.errors import EdgekdError  # noqa: E402
from edgekd.export.c_backend import HostBuild, generate_c  # noqa: E402
from edgekd.graph import measure_arena, read_tflite, run_tflm, tflm_interpreter  # noqa: E402
from edgekd.graph.sample_models import sample_models  # noqa: E402
from edgekd.harness import qemu  # noqa: E402

SAMPLES = ["tiny_cnn", "residual", "mlp", "mobilenet_tiny", "kws_dscnn_like", "ic_resnet8_like", "ad_fcae_like",
           "vww_mobilenet_like"]  # fmt: skip
MODEL_ONLY_MAIN = """#include "edgekd_model.h"
int main(void) { edgekd_invoke(); return edgekd_output()[0]; }
"""


def train_students(root: Path) -> dict[str, Path]:
    """Two small students on digits (a CNN and an MLP), exported for cortex-m4-qemu; returns run folders."""
    import torch
    from torch import nn

    from edgekd.data import load_data
    from edgekd.export import export_run
    from edgekd.models import build_model, save_model

    splits = load_data("digits")
    runs = {}
    specs = {
        "student_cnn_digits": ("cnn", {"input_shape": (1, 8, 8), "num_classes": 10, "channels": (8, 16), "width": 1.0}),
        "student_mlp_digits": ("mlp", {"input_shape": (1, 8, 8), "num_classes": 10, "hidden": (64, 32)}),
    }  # fmt: skip
    for name, (arch, kw) in specs.items():
        run = root / name
        run.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(0)
        model = build_model(arch, **kw)
        opt = torch.optim.Adam(model.parameters(), 1e-2)
        x, y = torch.from_numpy(splits.train.x), torch.from_numpy(splits.train.y)
        g = torch.Generator().manual_seed(0)
        model.train()
        for _ in range(400):
            idx = torch.randint(0, len(y), (64,), generator=g)
            loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        model.eval()
        save_model(run / "model.pt", model, arch, kw)
        (run / "data.json").write_text(json.dumps(splits.describe()))
        export_run(run, target="cortex-m4-qemu", quiet=True)
        runs[name] = run
    return runs


def model_only_elf(model: Path, work: Path) -> dict[str, Any]:
    """The generated model + kernels + a main() that invokes it once, for Cortex-M4: ELF sizes and stack."""
    cm = generate_c(model)
    cm.write(work)
    qemu.copy_templates(work)
    (work / "model_main.c").write_text(MODEL_ONLY_MAIN)
    srcs = ("model_main.c", "startup_cm4.c", "edgekd_model.c", "edgekd_kernels.c")
    mem = qemu.elf_memory(qemu.cross_build(model, work, srcs, "model.elf"), work)
    return {**mem, "arena": cm.arena_size, "plan": cm.plan_method, "tflm_greedy_head": cm.greedy_arena}


def tflm_host_latency_us(model: Path, x: np.ndarray, reps: int) -> float:
    interp = tflm_interpreter(model)
    shape = tuple(read_tflite(model).input_details()[0]["shape"])
    interp.set_input(x[0].reshape(shape), 0)
    interp.invoke()
    times = []
    for i in range(reps):
        interp.set_input(x[i % len(x)].reshape(shape), 0)
        t0 = time.perf_counter_ns()
        interp.invoke()
        times.append(time.perf_counter_ns() - t0)
    return statistics.median(times) / 1000


def bench_model(name: str, model: Path, run: Path | None, work: Path, quick: bool) -> dict[str, Any]:
    from edgekd.harness.bench import run_bench

    entry: dict[str, Any] = {"name": name, "model": str(model), "bytes": model.stat().st_size}
    m = read_tflite(model)
    entry["ops"] = m.op_names()
    tflm = measure_arena(model)
    entry["tflm_arena"] = tflm
    shape = m.input_details()[0]["shape"]
    x = np.random.default_rng(0).integers(-128, 128, size=(32, *shape[1:])).astype(np.int8)
    ref = run_tflm(model, x).reshape(len(x), -1)
    cm = generate_c(model)
    with HostBuild(cm) as hb:
        got = hb(x)
        hb(x[:4], repeats=20 if quick else 200)
        c_us = hb.ns_per_inference / 1000
    entry["host_bit_exact"] = bool(np.array_equal(got, ref))
    entry["host_samples"] = len(x)
    tflm_us = tflm_host_latency_us(model, x, 20 if quick else 200)
    entry["host_latency_us"] = {"c_backend_gcc_O2": round(c_us, 2), "tflm_interpreter": round(tflm_us, 2),
                                "speedup": round(tflm_us / c_us, 2) if c_us else None}  # fmt: skip
    elf = model_only_elf(model, work / name / "model_only")
    entry["c_backend_elf"] = elf
    c_ram = elf["ram_bytes"]
    entry["ram"] = {
        "c_backend": c_ram,
        "tflm_total": tflm["total"],
        "tflm_head": tflm["head"],
        "tflm_total_over_c": round(tflm["total"] / c_ram, 3),
        "saving_vs_tflm_total_pct": round(100 * (1 - c_ram / tflm["total"]), 1),
        "tflm_head_over_c": round(tflm["head"] / c_ram, 3),
    }
    entry["flash"] = {"c_backend_elf": elf["flash_bytes"], "tflm_flatbuffer": len(m.data),
                      "tflm_runtime": "not measured (TFLite Micro is not cross-built offline)"}  # fmt: skip
    src = run if run is not None else model
    samples = 20 if run is not None else 8
    _, rec = run_bench(src, target="cortex-m4-qemu", emulate=True, samples=samples, windows=2,
                       output=work / name / "bench", quiet=True)  # fmt: skip
    acc, perf = rec["accuracy"], rec["performance"]
    entry["emulated"] = {
        "instructions_per_inference": perf["instructions_per_inference"],
        "emulated_ms_per_inference": round(perf["us_per_inference"] / 1000, 3),
        "bit_exact": acc["bit_exact"],
        "samples": acc["samples"],
        "data": rec["data"]["source"],
        "top1_accuracy": acc["top1_accuracy"],
        "firmware_ram_bytes": rec["memory"]["ram_bytes"],
        "firmware_flash_bytes": rec["memory"]["flash_bytes"],
    }
    return entry


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer timing repeats and only the small models")
    ap.add_argument(
        "--out", default=None, help="results JSON (default benchmarks/results/c_backend_vs_tflm.json)"
    )
    args = ap.parse_args()
    if not qemu.have_toolchain():
        print("needs arm-none-eabi-gcc and qemu-system-arm (scripts/ensure-system-deps.sh)", file=sys.stderr)
        return 2
    rows, entries = [], []
    with tempfile.TemporaryDirectory(prefix="edgekd-cbench-") as tmp:
        work = Path(tmp)
        models: list[tuple[str, Path, Path | None]] = []
        for name, run in train_students(work / "runs").items():
            models.append((name, run / "export" / "cortex-m4-qemu" / "model_int8.tflite", run))
        names = SAMPLES[:4] if args.quick else SAMPLES
        models += [(n, p, None) for n, p in sample_models(names).items()]
        for name, path, run in models:
            t0 = time.perf_counter()
            try:
                e = bench_model(name, path, run, work, args.quick)
            except EdgekdError as err:
                e = {"name": name, "error": str(err)}
            e["wall_s"] = round(time.perf_counter() - t0, 1)
            entries.append(e)
            if "error" in e:
                rows.append([name, "error", e["error"][:60], "", "", "", "", ""])
                continue
            r, lat, em = e["ram"], e["host_latency_us"], e["emulated"]
            rows.append([name, f"{r['c_backend']:,}", f"{r['tflm_total']:,} ({r['tflm_total_over_c']:.2f}x)",
                         f"{r['saving_vs_tflm_total_pct']:.0f}%", f"{e['flash']['c_backend_elf']:,}",
                         f"{lat['c_backend_gcc_O2']:.1f} / {lat['tflm_interpreter']:.1f}",
                         f"{em['instructions_per_inference']:,}",
                         f"{e['host_bit_exact'] and em['bit_exact']}"])  # fmt: skip
    ok = [e for e in entries if "error" not in e]
    summary = {
        "models": len(entries),
        "all_bit_exact": all(e["host_bit_exact"] and e["emulated"]["bit_exact"] for e in ok) and len(ok) == len(entries),
        "less_ram_than_tflm_total_on_every_model": all(e["ram"]["c_backend"] < e["ram"]["tflm_total"] for e in ok),
        "ram_ratio_tflm_total_over_c_min": min((e["ram"]["tflm_total_over_c"] for e in ok), default=None),
        "ram_ratio_tflm_total_over_c_median": statistics.median([e["ram"]["tflm_total_over_c"] for e in ok]) if ok else None,
        "host_speedup_median": statistics.median([e["host_latency_us"]["speedup"] for e in ok]) if ok else None,
    }  # fmt: skip
    result = {"benchmark": "c_backend_vs_tflm", "machine": machine(), "summary": summary, "models": entries,
              "notes": [
                  "RAM c_backend = data + bss + call-graph stack of a model-only Cortex-M4 ELF (-Os, hard float)",
                  "tflm_total = host tflite-micro arena (head + tail); the 64-bit host tail overstates a 32-bit MCU's",
                  "emulated = QEMU mps2-an386, -icount shift=0: instructions per inference, not cycles",
              ]}  # fmt: skip
    out = Path(args.out) if args.out else None
    if out is None:
        path = write_results("c_backend_vs_tflm", result)
    else:
        from edgekd.atomic import atomic_write_json

        path = atomic_write_json(out, result)
    print_table("C backend vs TFLite Micro", ["model", "C RAM B", "TFLM arena B (x)", "RAM saved", "C flash B",
                "host us C / TFLM", "emulated instr/inf", "bit-exact"], rows)  # fmt: skip
    print(json.dumps(summary, indent=1))
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
