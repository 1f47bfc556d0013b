"""edgekd's C backend against TFLite Micro (+ CMSIS-NN) on the same emulated Cortex-M4, per model.

Every figure comes from ``edgekd bench --target cortex-m4-qemu --emulate`` (the Python API,
:func:`edgekd.harness.bench.run_bench`) on QEMU mps2-an386 with ``-icount shift=0`` (instructions per
inference: deterministic, not cycles), for four runtimes of the same ee_main.c protocol firmware:

* ``c``: edgekd's C backend with its fast Cortex-M4 kernels (``--kernels fast``, the default);
* ``tflm``: TFLite Micro + CMSIS-NN, built from ``../shared/third_party/tflite-micro`` (``--runtime tflm``);
* ``tflm-reference``: TFLite Micro with its reference kernels (``--runtime tflm-reference``);
* ``c-portable``: the C backend's portable plain-C kernels (``--kernels portable``; instructions only).

Per runtime two bench runs: performance mode (instructions per inference; flash and RAM of the firmware
without baked samples: flash = text + data, RAM = data + bss + stack, the C backend's stack from GCC's
call graph, TFLite Micro's the painted high-water mark or the call graph where deeper; TFLite Micro's
arena lies inside its bss, and its firmware reports the arena it used on the 32-bit target) and accuracy
mode (``--results raw``, 32 inputs baked into the image: the run's real test samples for the digits
students, random int8 inputs otherwise; bit-exact = every output byte equals the host ``tflite-micro``
interpreter's). TFLite Micro's planned head (non-persistent arena) is the host ``measure_arena``
figure, the same on a 32-bit MCU.

Superseded and dropped (the earlier version of this script): the model-only ELF RAM against TFLite
Micro's *64-bit host* arena total (now both runtimes' firmwares are measured on the 32-bit board), the
flatbuffer size standing in for TFLite Micro's flash (now its whole firmware is built), and the host
``gcc -O2`` vs interpreter latency (now instruction counts of both runtimes on the same board). Kept:
bit-exactness on the emulated board, and of the portable kernels' host build (``host_portable_bit_exact``).

Models: two students trained here for 400 steps on scikit-learn's digits (exported with ``edgekd export
--target cortex-m4-qemu``), the test models and the MLPerf-Tiny-like architectures of
``edgekd.graph.sample_models`` (random weights).

Resumable: one JSON per (model, runtime) in ``benchmarks/results/c_backend_vs_tflm/``, written when it
finishes; a rerun skips finished ones. ``--summary`` builds ``benchmarks/results/c_backend_vs_tflm.json``
and the table from them, with the goals of issue 24 per model.

Usage: python benchmarks/c_backend_vs_tflm.py [--models a,b] [--runtimes c,tflm] [--work DIR] [--summary]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
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
from _common import RESULTS, RunStore, machine, print_table, write_results  # noqa: E402

from edgekd.errors import EdgekdError  # noqa: E402

STUDENTS = ["student_cnn_digits", "student_mlp_digits"]
SAMPLES = ["kws_dscnn_like", "ic_resnet8_like", "vww_mobilenet_like", "ad_fcae_like", "tiny_cnn", "residual",
           "mlp", "mobilenet_tiny"]  # fmt: skip
MODELS = STUDENTS + SAMPLES
RUNTIMES = {"c": ("c", "fast"), "tflm": ("tflm", None), "tflm-reference": ("tflm-reference", None),
            "c-portable": ("c", "portable")}  # fmt: skip
ACCURACY_RUNTIMES = ("c", "tflm", "tflm-reference")  # c-portable: instructions only
STORE = RunStore(RESULTS / "c_backend_vs_tflm")
KWS_GOAL = 6_000_000
SAMPLE_COUNT = 32


# ---- the models ---------------------------------------------------------------------------------


def train_student(run: Path, arch: str, kw: dict[str, Any]) -> Path:
    """A small student on digits (400 Adam steps, seed 0), exported for cortex-m4-qemu into ``run``."""
    import torch
    from torch import nn

    from edgekd.data import load_data
    from edgekd.export import export_run
    from edgekd.models import build_model, save_model

    splits = load_data("digits")
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
    return run


def student_run(name: str, work: Path) -> Path:
    """The student's run folder under ``work/runs`` (trained unless already exported there)."""
    specs = {
        "student_cnn_digits": ("cnn", {"input_shape": (1, 8, 8), "num_classes": 10, "channels": (8, 16), "width": 1.0}),
        "student_mlp_digits": ("mlp", {"input_shape": (1, 8, 8), "num_classes": 10, "hidden": (64, 32)}),
    }  # fmt: skip
    run = work / "runs" / name
    if not (run / "export" / "cortex-m4-qemu" / "model_int8.tflite").is_file():
        train_student(run, *specs[name])
    return run


def model_source(name: str, work: Path) -> tuple[Path, Path | None]:
    """(the int8 .tflite, the run folder or None) of a benchmark model."""
    from edgekd.graph.sample_models import sample_models

    if name in STUDENTS:
        run = student_run(name, work)
        return run / "export" / "cortex-m4-qemu" / "model_int8.tflite", run
    return sample_models([name])[name], None


# ---- one (model, runtime) -----------------------------------------------------------------------


def bench(source: Path, runtime: str, kernels: str | None, mode: str, out: Path) -> dict[str, Any]:
    from edgekd.harness.bench import run_bench

    _, rec = run_bench(source, target="cortex-m4-qemu", emulate=True, runtime=runtime, kernels=kernels,
                       results="raw", samples=SAMPLE_COUNT, mode=mode, windows=2, window_s=0.2,
                       output=out, quiet=True)  # fmt: skip
    return rec


def performance_fields(rec: dict[str, Any]) -> dict[str, Any]:
    perf = rec["performance"]
    return {"instructions_per_inference": perf["instructions_per_inference"],
            "iterations_per_window": perf["iterations_per_window"], "windows": perf["windows"]}  # fmt: skip


def memory_fields(rec: dict[str, Any]) -> dict[str, Any]:
    """The firmware's memory (no baked samples): flash = text + data, RAM = data + bss + stack."""
    keep = ("text", "data", "bss", "stack", "flash_bytes", "ram_bytes", "arena", "arena_used", "stack_painted",
            "stack_callgraph", "stack_method")  # fmt: skip
    mem = {k: v for k, v in rec["memory"].items() if k in keep}
    c_model = rec.get("c_model") or {}
    if "scratch_bytes" in c_model:
        mem["scratch"] = c_model["scratch_bytes"]
    return mem


def accuracy_fields(rec: dict[str, Any]) -> dict[str, Any]:
    acc = rec["accuracy"]
    keep = ("samples", "bit_exact", "bytes_equal_samples", "max_abs_diff_vs_host_tflm", "first_mismatch_sample",
            "top1_accuracy", "top1_agreement_with_host_tflm", "preloaded_samples")  # fmt: skip
    return {**{k: acc.get(k) for k in keep}, "data": rec["data"]["source"]}


def runtime_facts(rec: dict[str, Any]) -> dict[str, Any]:
    if "tflm" in rec:
        t = rec["tflm"]
        return {"device": rec["device"], "ops": t.get("ops"), "opt": t.get("opt"), "build_s": t.get("build_s"),
                "compiled_files": t.get("compiled_files"), "boot_report": t.get("boot_report")}  # fmt: skip
    c = rec.get("c_model") or {}
    return {"device": rec["device"], "kernels": c.get("kernels"), "plan": c.get("plan"),
            "layer_kernels": [k["kernel"] for k in c.get("layer_kernels", [])], "patches": c.get("patches")}  # fmt: skip


def host_portable_bit_exact(model: Path) -> bool:
    """The portable kernels' host build (gcc) against the host TFLite Micro on 32 random inputs."""
    from edgekd.export.c_backend import HostBuild, generate_c
    from edgekd.graph import read_tflite, run_tflm

    shape = read_tflite(model).input_details()[0]["shape"]
    x = np.random.default_rng(0).integers(-128, 128, size=(SAMPLE_COUNT, *shape[1:])).astype(np.int8)
    ref = run_tflm(model, x).reshape(len(x), -1)
    with HostBuild(generate_c(model)) as hb:
        return bool(np.array_equal(hb(x), ref))


def measure(name: str, key: str, work: Path) -> dict[str, Any]:
    """One (model, runtime) record: performance-mode figures, then the accuracy check."""
    from edgekd.graph import measure_arena

    t0 = time.perf_counter()
    model, run = model_source(name, work)
    source = run if run is not None else model
    runtime, kernels = RUNTIMES[key]
    out = work / "bench" / name / key
    perf = bench(source, runtime, kernels, "performance", out / "performance")
    entry: dict[str, Any] = {"model": name, "runtime": key, "kernels": kernels,
                             "model_sha256": perf["model"]["sha256"], "model_bytes": perf["model"]["bytes"],
                             "ops": perf["model"]["ops"], "performance": performance_fields(perf),
                             "memory": memory_fields(perf), "facts": runtime_facts(perf)}  # fmt: skip
    if key in ACCURACY_RUNTIMES:
        entry["accuracy"] = accuracy_fields(bench(source, runtime, kernels, "accuracy", out / "accuracy"))
    if key.startswith("tflm"):
        entry["tflm_host_arena"] = measure_arena(model)
    if key == "c":
        entry["host_portable_bit_exact"] = host_portable_bit_exact(model)
    entry["wall_s"] = round(time.perf_counter() - t0, 1)
    return entry


def run_all(models: list[str], runtimes: list[str], work: Path) -> None:
    for name in models:
        for key in runtimes:
            rec_key = f"{name}__{key}"
            if rec_key in STORE:
                print(f"[skip] {rec_key}: finished", flush=True)
                continue
            print(f"[run ] {rec_key} ...", flush=True)
            try:
                rec = STORE.put(rec_key, measure(name, key, work))
            except EdgekdError as err:
                print(f"[fail] {rec_key}: {err}", flush=True)
                continue
            print(f"[done] {rec_key}: {rec['performance']['instructions_per_inference']:,} instructions, "
                  f"{rec['wall_s']} s", flush=True)  # fmt: skip


# ---- the summary --------------------------------------------------------------------------------


def first_line(cmd: list[str]) -> str | None:
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return (r.stdout.splitlines() or [None])[0]


def toolchain() -> dict[str, Any]:
    return {"arm-none-eabi-gcc": first_line(["arm-none-eabi-gcc", "--version"]),
            "arm-none-eabi-g++": first_line(["arm-none-eabi-g++", "--version"]),
            "qemu-system-arm": first_line(["qemu-system-arm", "--version"])}  # fmt: skip


def model_row(name: str) -> dict[str, Any] | None:
    """The four runtimes' figures of one model (None where none finished)."""
    recs = {k: STORE.get(f"{name}__{k}") for k in RUNTIMES}
    if not any(recs.values()):
        return None
    instr = {k: r["performance"]["instructions_per_inference"] if r else None for k, r in recs.items()}
    c, t = recs["c"], recs["tflm"]
    row: dict[str, Any] = {"model": name, "instructions": instr,
                           "flash": {"c": mem(c, "flash_bytes"), "tflm": mem(t, "flash_bytes"),
                                     "tflm-reference": mem(recs["tflm-reference"], "flash_bytes")},
                           "ram": {"c": mem(c, "ram_bytes"), "tflm": mem(t, "ram_bytes"),
                                   "tflm-reference": mem(recs["tflm-reference"], "ram_bytes")},
                           "c_arena_plus_stack": (c["memory"]["arena"] + c["memory"].get("scratch", 0)
                                                  + c["memory"]["stack"]) if c else None,
                           "tflm_arena_used": mem(t, "arena_used"),
                           "tflm_planned_head": t["tflm_host_arena"]["head"] if t else None,
                           "bit_exact": {k: r["accuracy"]["bit_exact"] if r and "accuracy" in r else None
                                         for k, r in recs.items() if k in ACCURACY_RUNTIMES},
                           "host_portable_bit_exact": c.get("host_portable_bit_exact") if c else None,
                           "missing": [k for k, r in recs.items() if r is None]}  # fmt: skip
    row["c_patches"] = c_patches(c)
    row["goals"] = model_goals(row)
    return row


def c_patches(rec: dict[str, Any] | None) -> dict[str, Any] | None:
    """The C backend's patch-based prefix (its layers, row bands, recomputed MACs), None where off."""
    p = ((rec or {}).get("facts") or {}).get("patches")
    if not p:
        return None
    keep = ("layers", "bands", "scratch_bytes", "extra_macs", "recompute_overhead_model")
    return {k: p.get(k) for k in keep}


def mem(rec: dict[str, Any] | None, field: str) -> int | None:
    return rec["memory"].get(field) if rec else None


def below(a: int | None, b: int | None, strict: bool = True) -> bool | None:
    if a is None or b is None:
        return None
    return a < b if strict else a <= b


def model_goals(row: dict[str, Any]) -> dict[str, Any]:
    i, r = row["instructions"], row["ram"]
    goals = {
        "instructions_at_or_below_tflm_cmsis_nn": below(i["c"], i["tflm"], strict=False),
        "ram_below_tflm_arena_used": below(r["c"], row["tflm_arena_used"]),
        "ram_below_tflm_planned_head": below(r["c"], row["tflm_planned_head"]),
        "ram_below_tflm_firmware_ram": below(r["c"], r["tflm"]),
        "arena_plus_stack_below_tflm_arena_used": below(row["c_arena_plus_stack"], row["tflm_arena_used"]),
        "arena_plus_stack_below_tflm_planned_head": below(row["c_arena_plus_stack"], row["tflm_planned_head"]),
        "bit_exact": None if None in (row["bit_exact"].get("c"), row["bit_exact"].get("tflm"))
        else bool(row["bit_exact"]["c"] and row["bit_exact"]["tflm"]),
        "flash_at_or_below_tflm_cmsis_nn": below(row["flash"]["c"], row["flash"]["tflm"], strict=False),
    }  # fmt: skip
    if row["model"] == "kws_dscnn_like":
        goals["kws_at_most_6M_instructions"] = below(i["c"], KWS_GOAL, strict=False)
    return goals


def overall_goals(rows: list[dict[str, Any]]) -> dict[str, Any]:
    def every(goal: str) -> dict[str, Any]:
        vals = {r["model"]: r["goals"][goal] for r in rows}
        met = [m for m, v in vals.items() if v]
        failed = [m for m, v in vals.items() if v is False]
        return {"met": bool(vals) and len(met) == len(vals), "models_met": len(met), "models": len(vals),
                "failed": failed, "not_measured": [m for m, v in vals.items() if v is None]}  # fmt: skip

    kws = next((r for r in rows if r["model"] == "kws_dscnn_like"), None)
    head = every("ram_below_tflm_planned_head")
    head["met"] = head["models_met"] * 2 >= head["models"] > 0
    head_arena = every("arena_plus_stack_below_tflm_planned_head")
    head_arena["met"] = head_arena["models_met"] * 2 >= head_arena["models"] > 0
    return {
        "kws_at_most_6M_instructions": {"met": bool(kws and kws["goals"]["kws_at_most_6M_instructions"]),
                                        "instructions": kws["instructions"]["c"] if kws else None},
        "instructions_at_or_below_tflm_cmsis_nn_on_every_model": every("instructions_at_or_below_tflm_cmsis_nn"),
        "ram_below_tflm_arena_used_on_every_model": every("ram_below_tflm_arena_used"),
        "ram_below_tflm_planned_head_on_at_least_half": head,
        "ram_below_tflm_firmware_ram_on_every_model": every("ram_below_tflm_firmware_ram"),
        "arena_plus_stack_below_tflm_arena_used_on_every_model": every("arena_plus_stack_below_tflm_arena_used"),
        "arena_plus_stack_below_tflm_planned_head_on_at_least_half": head_arena,
        "bit_exact_on_every_model": every("bit_exact"),
        "flash_at_or_below_tflm_cmsis_nn_on_every_model": every("flash_at_or_below_tflm_cmsis_nn"),
    }  # fmt: skip


def fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "NO"
    return f"{v:,}" if isinstance(v, int) else str(v)


def millions(v: int | None) -> str:
    return "-" if v is None else f"{v / 1e6:.2f}M"


def table_row(r: dict[str, Any]) -> list[str]:
    i, f, m, b = r["instructions"], r["flash"], r["ram"], r["bit_exact"]
    return [r["model"], " / ".join(millions(i[k]) for k in RUNTIMES), f"{fmt(f['c'])} / {fmt(f['tflm'])}",
            f"{fmt(m['c'])} / {fmt(m['tflm'])}", f"{fmt(r['tflm_arena_used'])} / {fmt(r['tflm_planned_head'])}",
            fmt(r["c_arena_plus_stack"]), f"{fmt(b.get('c'))} / {fmt(b.get('tflm'))}"]  # fmt: skip


def summary(models: list[str]) -> Path:
    os.environ.setdefault("COLUMNS", "160")  # rich: the table's width when not on a terminal
    rows = [r for r in (model_row(n) for n in models) if r is not None]
    result = {
        "benchmark": "c_backend_vs_tflm",
        "machine": machine(),
        "toolchain": toolchain(),
        "board": "QEMU mps2-an386 (Cortex-M4F), -icount shift=0: 1 instruction = 1 emulated ns",
        "goals": overall_goals(rows),
        "models": rows,
        "not_run": {r["model"]: r["missing"] for r in rows if r["missing"]}
        | {n: list(RUNTIMES) for n in models if n not in {r["model"] for r in rows}},
        "records": str(STORE.folder.relative_to(ROOT)),
        "notes": [
            "instructions: performance mode of edgekd bench --emulate (c = C backend fast kernels, tflm = TFLite "
            "Micro + CMSIS-NN -Os, tflm-reference = TFLite Micro reference kernels -Os, c-portable = C backend "
            "portable kernels)",
            "flash = text + data, RAM = data + bss + stack of the protocol firmware without baked samples (the "
            "same ee_main.c protocol and UART buffers in both); TFLite Micro's arena is inside its bss",
            "C stack: GCC call graph; TFLite Micro stack: painted high-water mark (or call graph where deeper)",
            "tflm_arena_used: the arena TFLite Micro used on the 32-bit board (its firmware's boot report); "
            "tflm_planned_head: its non-persistent (planned) arena part, host measure_arena (same on 32-bit)",
            "c_arena_plus_stack: the C backend's activation arena + kernel scratch + stack, without the "
            "protocol firmware's buffers",
            "c_patches: the C backend's patch-based prefix (MCUNetV2, row bands), chosen by the code generator "
            "where it lowers the arena by 1/16 or more at most 10% of the model's MACs recomputed; null: off",
            "bit_exact: accuracy mode --results raw, 32 inputs baked into the image (digits test samples for the "
            "students, random int8 otherwise), every output byte vs the host tflite-micro interpreter",
        ],
    }  # fmt: skip
    path = write_results("c_backend_vs_tflm", result)
    print_table("C backend (a) vs TFLite Micro + CMSIS-NN (b), reference (c), C portable (d); QEMU mps2-an386",
                ["model", "instructions a / b / c / d", "flash B a / b", "RAM B a / b", "TFLM arena used / head",
                 "C arena+scratch+stack", "bit-exact a / b"], [table_row(r) for r in rows])  # fmt: skip
    print(json.dumps(result["goals"], indent=1))
    print(f"results: {path}")
    return path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(MODELS), help="comma-separated (default: all)")
    ap.add_argument(
        "--runtimes", default=",".join(RUNTIMES), help=f"comma-separated of {', '.join(RUNTIMES)}"
    )
    ap.add_argument(
        "--work", default=None, help="build and student-run folder (default: $TMPDIR/edgekd-c-vs-tflm)"
    )
    ap.add_argument(
        "--summary", action="store_true", help="only build the summary JSON and table from the records"
    )
    args = ap.parse_args()
    models = [m for m in args.models.split(",") if m]
    runtimes = [r for r in args.runtimes.split(",") if r]
    unknown = sorted(set(models) - set(MODELS)) + sorted(set(runtimes) - set(RUNTIMES))
    if unknown:
        print(f"unknown model or runtime: {', '.join(unknown)}", file=sys.stderr)
        return 2
    if not args.summary:
        from edgekd.harness import qemu

        if not qemu.have_toolchain():
            print(
                "needs arm-none-eabi-gcc and qemu-system-arm (scripts/ensure-system-deps.sh)", file=sys.stderr
            )
            return 2
        work = Path(args.work or Path(tempfile.gettempdir()) / "edgekd-c-vs-tflm")
        run_all(models, runtimes, work)
    summary(MODELS if args.summary else models)
    return 0


if __name__ == "__main__":
    sys.exit(main())
