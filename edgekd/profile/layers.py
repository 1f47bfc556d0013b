"""``edgekd profile --layers``: where the int8 model loses accuracy, layer by layer.

An export folder holds ``model_int8.tflite`` and its float twin ``model_fp32.tflite`` (the same onnx2tf
conversion: the same operators in the same order, so tensors match by position). Both run on the same
evaluation samples (at most :data:`MAX_SAMPLES`) on LiteRT's reference kernels with every intermediate
tensor kept. Per operator output:

* ``sqnr_db`` / ``max_abs_error``: the dequantized int8 activation against the float one (the error
  accumulated up to this layer); ``clipped``: the share of float values outside the int8 range;
* ``sqnr_alone_db``: the float activation quantized with this tensor's int8 scale / zero point only
  (the error this layer's range adds by itself);
* ``accuracy_alone``: the float model with only this layer switched to int8 (its dequantized int8 weights
  and bias, its output through QUANTIZE -> DEQUANTIZE with the int8 scale / zero point; built by
  :func:`edgekd.graph.requantize.with_int8_layer`, run in TFLite's own kernels).

The layer name is the PyTorch module / ONNX node (:func:`edgekd.export.checks.layer_of_op`, from
``model.onnx`` when present), else the TFLite tensor. ``summary`` names the layers that cost the most
(accuracy lost alone, then the lowest SQNR alone). Everything runs in a child process with a time and
memory limit: the model files are untrusted.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgekd.data.evalset import EvalSet
from edgekd.errors import EdgekdError

MAX_SAMPLES = 256
MAX_LAYER_MODELS = 64  # operators given an accuracy-alone run (the rest: SQNR only)
WORST = 3
_EPS = 1e-30


def sqnr_db(signal: float, noise: float) -> float | None:
    """``10 log10(signal / noise)`` (None for a silent signal, 200 dB cap for no noise)."""
    if signal <= 0:
        return None
    return float(min(200.0, 10 * np.log10(signal / max(noise, _EPS))))


def export_folders(export_root: Path) -> list[Path]:
    """Export folders with an int8 model and its float twin."""
    if not export_root.is_dir():
        return []
    return [d for d in sorted(export_root.iterdir())
            if (d / "model_int8.tflite").is_file() and (d / "model_fp32.tflite").is_file()]  # fmt: skip


def layer_report(folder: Path, data: EvalSet, max_samples: int = MAX_SAMPLES) -> dict[str, Any]:
    """The per-layer float-vs-int8 report of one export folder (run in a limited child process)."""
    from edgekd.child import ChildFailed, run_in_child

    try:
        return run_in_child(_layer_report, Path(folder), data, max_samples, what=f"{folder}: per-layer diff")
    except ChildFailed as e:
        raise EdgekdError(str(e)) from None


class _Stats:
    """Running sums of one tensor: signal and noise power, max error, clipped values."""

    def __init__(self, scale: float, zp: int) -> None:
        self.scale, self.zp = scale, zp
        self.lo, self.hi = (-128 - zp) * scale, (127 - zp) * scale
        self.signal = self.noise = self.noise_alone = self.max_err = 0.0
        self.n = self.clipped = 0
        self.fmin, self.fmax = np.inf, -np.inf

    def add(self, f: np.ndarray, q: np.ndarray) -> None:
        from edgekd.graph.quant import dequantize, quantize

        f, q = f.astype(np.float64).ravel(), q.astype(np.float64).ravel()
        self.signal += float(f @ f)
        self.noise += float((q - f) @ (q - f))
        alone = dequantize(quantize(f, self.scale, self.zp, np.int8), self.scale, self.zp) - f
        self.noise_alone += float(alone @ alone)
        self.max_err = max(self.max_err, float(np.abs(q - f).max(initial=0.0)))
        self.clipped += int(((f < self.lo - self.scale / 2) | (f > self.hi + self.scale / 2)).sum())
        self.n += f.size
        self.fmin, self.fmax = (
            min(self.fmin, float(f.min(initial=np.inf))),
            max(self.fmax, float(f.max(initial=-np.inf))),
        )

    def record(self) -> dict[str, Any]:
        return {"scale": self.scale, "zero_point": self.zp, "int8_range": [self.lo, self.hi],
                "float_range": [self.fmin, self.fmax], "sqnr_db": sqnr_db(self.signal, self.noise),
                "sqnr_alone_db": sqnr_db(self.signal, self.noise_alone), "max_abs_error": self.max_err,
                "clipped": self.clipped / max(1, self.n)}  # fmt: skip


def _load_pair(folder: Path) -> tuple[Any, Any, Any]:
    from edgekd.export.ranges import same_graph
    from edgekd.graph import read_tflite

    fp32, int8 = read_tflite(folder / "model_fp32.tflite"), read_tflite(folder / "model_int8.tflite")
    if not same_graph(fp32, int8):
        raise EdgekdError(f"{folder}: model_fp32.tflite and model_int8.tflite have different operators; "
                          "re-export the folder so both come from one conversion")  # fmt: skip
    if not int8.is_full_integer():
        raise EdgekdError(f"{folder / 'model_int8.tflite'}: not a full-integer int8 model")
    onnx_model = None
    if (folder / "model.onnx").is_file():
        from edgekd.export.onnx import load_onnx

        try:
            onnx_model = load_onnx(folder / "model.onnx")
        except EdgekdError:
            onnx_model = None  # names fall back to TFLite tensors
    return fp32, int8, onnx_model


def _layer_name(int8: Any, op_index: int, onnx_model: Any) -> dict[str, Any]:
    from edgekd.export.checks import layer_of_op

    info = layer_of_op(int8, op_index, onnx_model)
    info["name"] = info.get("layer") or info.get("onnx_node") or info.get("tflite_tensor", "")[:60]
    return info


def _accuracy(out: np.ndarray, y: np.ndarray | None) -> float | None:
    return None if y is None else float((out.reshape(len(out), -1).argmax(1) == y).mean())


def _layer_report(folder: Path, data: EvalSet, max_samples: int) -> dict[str, Any]:
    from edgekd.graph import requantize as rq
    from edgekd.runtimes import adapt_input

    fp32, int8, onnx_model = _load_pair(folder)
    ev = data.subsample(max_samples)
    x = adapt_input(ev.x, tuple(fp32.input_details()[0]["shape"]), True, folder / "model_fp32.tflite")
    y = ev.y if ev.task in (None, "classification") else None
    pairs = list(zip(rq.op_output_tensors(fp32), rq.op_output_tensors(int8)))
    stats = [
        _Stats(float(int8.tensors[t].scale[0]), int(int8.tensors[t].zero_point[0])) for _, (_, t) in pairs
    ]
    outs_f, outs_q = [], []
    for (vf, of), (vq, oq) in zip(rq.iter_tensors(fp32, x, [t for (_, t), _ in pairs]),
                                  rq.iter_tensors(int8, x, [t for _, (_, t) in pairs])):  # fmt: skip
        for s, f, q in zip(stats, vf, vq):
            s.add(f, q)
        outs_f.append(of)
        outs_q.append(oq)
    layers = []
    for k, ((op_index, _), _) in enumerate(pairs):
        row = {"operator": op_index, "op": int8.operators[op_index].opcode, **_layer_name(int8, op_index, onnx_model),
               **stats[k].record()}  # fmt: skip
        if y is not None and k < MAX_LAYER_MODELS:
            row["accuracy_alone"] = _accuracy(rq.run_model(rq.with_int8_layer(fp32, int8, op_index), x), y)
        layers.append(row)
    report = {"folder": str(folder), "samples": int(len(x)), "data": ev.name, "runtime": "litert-ref",
              "float_accuracy": _accuracy(np.concatenate(outs_f), y),
              "int8_accuracy": _accuracy(np.concatenate(outs_q), y), "layers": layers}  # fmt: skip
    report["worst"] = [r["name"] for r in worst_layers(report)]
    report["summary"] = summary_line(report)
    return report


def _cost(report: dict[str, Any], row: dict[str, Any]) -> tuple[float, float]:
    """Sort key, most costly first: accuracy lost alone, then the lowest SQNR alone."""
    drop = 0.0
    if report.get("float_accuracy") is not None and row.get("accuracy_alone") is not None:
        drop = report["float_accuracy"] - row["accuracy_alone"]
    sq = row.get("sqnr_alone_db")
    return (-round(drop, 6), sq if sq is not None else 1e9)


def worst_layers(report: dict[str, Any], n: int = WORST) -> list[dict[str, Any]]:
    """The ``n`` layers that cost the most (:func:`_cost`); ops that only pass their input's quantization on
    (PAD, RESHAPE, pooling: :data:`~edgekd.graph.requantize.TIED_OPS`) are left out."""
    from edgekd.graph.requantize import TIED_OPS

    rows = [r for r in report["layers"] if r["op"] not in TIED_OPS]
    return sorted(rows, key=lambda r: _cost(report, r))[:n]


def _describe(report: dict[str, Any], row: dict[str, Any]) -> str:
    parts = [row["op"]]
    if row.get("accuracy_alone") is not None and report.get("float_accuracy") is not None:
        parts.append(f"{100 * (row['accuracy_alone'] - report['float_accuracy']):+.2f} points alone")
    if row.get("sqnr_alone_db") is not None:
        parts.append(f"SQNR alone {row['sqnr_alone_db']:.1f} dB")
    if row.get("clipped"):
        parts.append(f"{100 * row['clipped']:.2f}% clipped")
    return f"{row['name']} ({', '.join(parts)})"


def summary_line(report: dict[str, Any]) -> str:
    """One line: the int8 cost and the layers that cost the most."""
    fa, qa = report.get("float_accuracy"), report.get("int8_accuracy")
    head = f"int8 {100 * qa:.2f}% vs float {100 * fa:.2f}% on {report['samples']} samples" if fa is not None else (
        f"int8 vs float on {report['samples']} samples")  # fmt: skip
    worst = worst_layers(report)
    return f"{head}; the layers that cost the most: " + "; ".join(_describe(report, r) for r in worst)
