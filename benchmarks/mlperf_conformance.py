"""MLPerf Tiny conformance, both ways (issue 23), per device and per task.

1. The official host sequence (the runner's ``device_under_test.py`` and ``main.py`` scoring, re-stated in
   ``tests/_mlperf_official.py``: ``profile``, ``db load`` + 31-byte ``db`` lines, ``infer 1 0``, the
   ``m-results`` regex, top-1 after dividing by the sum) on each edgekd device: the software device, the
   C-backend firmware built for the host (on a pty) and on the emulated Cortex-M4 (QEMU) — beside the
   same sequence on an official-style device (the reference monitor around the reference submissions'
   ``th_load_tensor`` / ``th_results``). Classification: top-1 against the host TFLite Micro arg-max
   (what a correct device must reproduce); AD: the anomaly scores' max difference to the host's.
2. ``edgekd bench`` on the official-style device: top-1 agreement and results within tolerance.
3. The emulated VWW-size accuracy time per sample: samples sent as ``db`` lines against samples in the
   firmware image (``db sample K``).

Models: the MLPerf-Tiny-like sample models (random weights): KWS DS-CNN, IC ResNet-8, AD FC autoencoder;
VWW uses the 16x16 tiny CNN under the ``vww01`` name (the VWW-size sample model's random logits
quantize to a scale of 1e-8, so every printed result is 0.000), and the VWW-size model for timing.

    python benchmarks/mlperf_conformance.py [--samples 6] [--vww-samples 3]
"""

from __future__ import annotations

import argparse
import contextlib
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the official re-statement

import _mlperf_official as mo  # noqa: E402
from _common import machine, print_table, write_results  # noqa: E402

# (row, MLPerf Tiny name, sample model): "ic01 logits" is a classifier without a final softmax
TASKS = [("kws01", "kws01", "kws_dscnn_like"), ("ic01", "ic01", "ic_resnet8_like"), ("vww01", "vww01", "tiny_cnn"),
         ("ad01", "ad01", "ad_fcae_like"), ("ic01 logits", "ic01", "mlp")]  # fmt: skip


@contextlib.contextmanager
def device_port(kind: str, model: Path, name: str, work: Path) -> Iterator[str]:
    """A port with ``kind`` of device running ``model`` as MLPerf Tiny model ``name``."""
    from edgekd.harness.softdevice import SoftwareDevice, TflmModelFn, pty_device

    if kind in ("software", "official-style"):
        run = TflmModelFn(model)
        dev = SoftwareDevice(run, run.io, model_name=name) if kind == "software" else (
            mo.official_style_device(run, run.io, name))  # fmt: skip
        try:
            with pty_device(dev) as port:
                yield port
        finally:
            run.close()
    elif kind == "c-firmware (host)":
        from edgekd.harness.firmware_project import write_c_backend_project

        proj = work / f"c-{name}-{model.stem}"
        from edgekd.harness.mlperf import WireSettings

        write_c_backend_project(model, proj, WireSettings.of(model, name, vendor="edgekd C backend"))
        subprocess.run(["make", "-s", "-C", str(proj), "host"], check=True, capture_output=True)
        with mo.on_pty(proj / "firmware_host") as port:
            yield port
    else:
        from edgekd.harness.qemu import emulated_board

        with emulated_board(
            model, "cortex-m4-qemu", work / f"qemu-{name}-{model.stem}", quiet=True, model_name=name
        ) as (
            url,
            _,
        ):
            yield url


def official_sequence(kind: str, model: Path, name: str, n: int, work: Path) -> dict[str, Any]:
    """The official host sequence on one device: reported model name, top-1 or AD score error."""
    from edgekd.graph import run_tflm
    from edgekd.harness.mlperf import DEFAULT_INPUT_FORMAT, ModelIO, encode_inputs, result_values

    io = ModelIO.of(model)
    q = np.random.default_rng(0).integers(-128, 128, size=(n, *io.input_shape)).astype(np.int8)
    host = run_tflm(model, q).reshape(n, -1)
    wire = encode_inputs(q, None, io, DEFAULT_INPUT_FORMAT[name])
    t0 = time.monotonic()
    with device_port(kind, model, name, work) as port:
        h = mo.OfficialHost(port, timeout=120)
        try:
            reported, results = h.sequence(wire)
        finally:
            h.close()
    row: dict[str, Any] = {"device": kind, "task": name, "model_reported": reported, "samples": n,
                           "seconds_per_sample": (time.monotonic() - t0) / n}  # fmt: skip
    if name == "ad01":
        from edgekd.graph.quant import dequantize

        xf = dequantize(q.reshape(n, -1), io.input_scale, io.input_zero_point)
        want = [result_values(host[i], xf[i], io, name, "float")[0] for i in range(n)]
        got = [r[0] if len(r) == 1 else float("nan") for r in results]
        row["one_score_per_input"] = all(len(r) == 1 for r in results)
        row["max_score_error"] = float(np.nanmax(np.abs(np.subtract(got, want)))) if got else None
    else:
        labels = np.argmax(host, axis=1)
        row["top1_vs_host_tflm"] = float(
            np.mean([mo.OfficialHost.top1(r) == y for r, y in zip(results, labels)])
        )
    return row


def bench_on_official_style(model: Path, name: str, n: int, work: Path) -> dict[str, Any]:
    from edgekd.harness.bench import run_bench
    from edgekd.harness.softdevice import TflmModelFn, pty_device

    run = TflmModelFn(model)
    dev = mo.official_style_device(run, run.io, name)
    try:
        with pty_device(dev) as port:
            _, rec = run_bench(model, target="tflite-micro", port=port, samples=n, windows=2, window_s=0.02,
                               output=work / f"bench-{name}-{model.stem}", quiet=True, mlperf_model=name)  # fmt: skip
    finally:
        run.close()
    acc = rec["accuracy"]
    return {"task": name, "samples": acc["samples"], "top1_agreement": acc["top1_agreement_with_host_tflm"],
            "within_tolerance": acc["results_within_tolerance_samples"], "bit_exact": acc["bit_exact"],
            "non_protocol_lines_skipped": rec["protocol"]["non_protocol_lines"]}  # fmt: skip


def vww_timing(model: Path, n: int, work: Path) -> dict[str, Any]:
    """Seconds per VWW-size sample on the emulated board: db lines against samples in the image."""
    from edgekd.harness.bench import run_bench

    out = {}
    for how, preload, k in (("db lines", False, min(n, 10)), ("in the firmware image", True, n)):
        t0 = time.monotonic()
        _, rec = run_bench(model, target="cortex-m4-qemu", emulate=True, mode="accuracy", samples=k,
                           output=work / f"vww-{preload}", quiet=True, preload=preload)  # fmt: skip
        acc = rec["accuracy"]
        out[how] = {"samples": k, "seconds_per_sample": acc["seconds_per_sample"],
                    "seconds_with_build_and_boot": time.monotonic() - t0,
                    "top1_agreement": acc["top1_agreement_with_host_tflm"]}  # fmt: skip
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--samples", type=int, default=6)
    ap.add_argument("--vww-samples", type=int, default=50, help="in the image; db lines: at most 10")
    ap.add_argument(
        "--devices", nargs="+", default=["official-style", "software", "c-firmware (host)", "qemu"]
    )
    args = ap.parse_args()
    from edgekd.graph.sample_models import sample_models

    models = sample_models([*(key for _, _, key in TASKS), "vww_mobilenet_like"])
    rows, bench_rows = [], []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for kind in args.devices:
            for row, name, key in TASKS:
                rows.append({**official_sequence(kind, models[key], name, args.samples, work), "row": row})
                print(rows[-1], flush=True)
        for row, name, key in TASKS:
            bench_rows.append({**bench_on_official_style(models[key], name, args.samples, work), "row": row})
        timing = vww_timing(models["vww_mobilenet_like"], args.vww_samples, work)
    print_table("official host sequence on each device", ["device", "task", "model", "top-1 / score err", "s/sample"],
                [[r["device"], r["row"], r["model_reported"],
                  f"{100 * r['top1_vs_host_tflm']:.0f}%" if "top1_vs_host_tflm" in r else f"{r['max_score_error']:.4f}",
                  f"{r['seconds_per_sample']:.2f}"] for r in rows])  # fmt: skip
    print_table("edgekd bench on an official-style device", ["task", "top-1 agreement", "within tol", "bit-exact"],
                [[r["row"], f"{100 * r['top1_agreement']:.0f}%", f"{r['within_tolerance']}/{r['samples']}",
                  r["bit_exact"]] for r in bench_rows])  # fmt: skip
    print_table("emulated VWW-size accuracy run", ["samples sent as", "samples", "s/sample", "s in all"],
                [[k, v["samples"], f"{v['seconds_per_sample']:.2f}", f"{v['seconds_with_build_and_boot']:.0f}"]
                 for k, v in timing.items()])  # fmt: skip
    path = write_results("mlperf_conformance", {"machine": machine(), "official_host_sequence": rows,
                                                "edgekd_bench_on_official_style": bench_rows,
                                                "emulated_vww_accuracy": timing})  # fmt: skip
    print(path)


if __name__ == "__main__":
    main()
