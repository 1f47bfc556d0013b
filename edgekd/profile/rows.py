"""One report row: one model file on one runtime — its file facts (flash, params, MACs, arena),
latency, host memory and accuracy against the test data and the teacher.

``.tflite`` rows run in a forked child with a time and memory limit (LiteRT and TFLite Micro crash on
corrupt models); a failure becomes the row's one-line ``error``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgekd.data.evalset import EvalSet
from edgekd.errors import EdgekdError, error_line
from edgekd.metrics.reconstruction import reconstruction_metrics, reconstruction_scores
from edgekd.metrics.summary import anomaly_metrics, classification_metrics
from edgekd.profile import macs as macs_mod
from edgekd.profile.latency import latency_stats, mcu_latency_estimate
from edgekd.profile.memory import flash_bytes, measure_peak_rss, subprocess_peak_rss, tflite_arena
from edgekd.profile.options import ProfileOptions
from edgekd.runtimes import RUNTIMES, adapt_input, open_runtime, read_model_bytes, tflite_precision

NATIVE_SUFFIXES = (".tflite",)  # run by native runtimes that trust the file: profiled in a child process


@dataclass
class Artifact:
    path: Path
    role: str  # teacher | baseline | student | export | file
    label: str


@dataclass(frozen=True)
class RowContext:
    """What every row of one report shares: the test data, the teacher's outputs on it (once the
    teacher row has run), the options and the targets for MCU estimates."""

    data: EvalSet | None
    teacher_outputs: np.ndarray | None
    opts: ProfileOptions
    targets: list[dict[str, Any]]


def file_facts(path: Path) -> dict[str, Any]:
    """Properties of the file itself, shared by every runtime row: flash, params, MACs, arena."""
    facts: dict[str, Any] = {"flash_bytes": flash_bytes(path), "format": path.suffix.lstrip(".").lower()}
    ext = path.suffix.lower()
    if ext in (".pt", ".pth"):
        from edgekd.models import load_model

        model, record = load_model(path)
        shape = record.get("kwargs", {}).get("input_shape")
        facts["model_name"] = record.get("name")
        if shape is not None:
            facts["macs"] = macs_mod.torch_macs(model, shape)
    elif ext == ".onnx":
        facts["macs"] = macs_mod.onnx_macs(path)
    elif ext == ".tflite":
        from edgekd.graph import read_tflite

        data = read_model_bytes(path)
        read_tflite(data, source=str(path))  # structural validation, the file named in the message
        facts["macs"] = macs_mod.tflite_macs(data)
        precision, full = tflite_precision(data)
        facts["precision"] = precision
        if full:
            facts["arena"] = tflite_arena(data)
    if "macs" in facts:
        facts["params"] = facts["macs"]["params"]
    return facts


def _task(data: EvalSet, outputs: np.ndarray) -> str:
    """The data's task, else the export's rule (:func:`edgekd.export.source.infer_task`)."""
    if data.task:
        return data.task
    from edgekd.export.source import infer_task

    return infer_task(tuple(data.x.shape[1:]), int(outputs.reshape(len(outputs), -1).shape[1]))[0]


def _reconstruction_accuracy(
    rt: Any, data: EvalSet, out: np.ndarray, teacher: np.ndarray | None
) -> dict[str, Any]:
    """An autoencoder's row: AUC/F1 of its reconstruction errors when the data has anomaly labels."""
    x = adapt_input(data.x, rt.input_shape, rt.channels_last, rt.path)
    scores = reconstruction_scores(out, x)
    t_out = None if teacher is None else teacher.reshape(len(teacher), -1)
    if data.y is not None:
        res = anomaly_metrics(scores, data.y, None if t_out is None else reconstruction_scores(t_out, x))
    else:
        res = {"task": "reconstruction", "n": int(len(out)), "note": "no anomaly labels: no AUC"}
    res["score_mean"] = float(scores.mean())
    if t_out is not None:
        res.setdefault("vs_teacher", {}).update(reconstruction_metrics(out, t_out, x))
    return res


def _accuracy(rt: Any, data: EvalSet, outputs: np.ndarray, teacher: np.ndarray | None) -> dict[str, Any]:
    """Metrics of one row; ``teacher`` is the reference model's outputs on the same data."""
    out = outputs.reshape(len(outputs), -1)
    if _task(data, outputs) == "reconstruction":
        return _reconstruction_accuracy(rt, data, out, teacher)
    if data.y is None:
        return {"note": "data has no labels"}
    n_cls = data.num_classes or out.shape[1]
    if out.shape[1] != n_cls:
        raise EdgekdError(
            f"{rt.path}: model has {out.shape[1]} outputs but the data set {data.name!r} has {n_cls} classes"
        )
    return classification_metrics(out, data.y, n_cls, teacher)


def profile_row(
    art: Artifact, runtime: str, facts: dict[str, Any], ctx: RowContext
) -> tuple[dict[str, Any], np.ndarray | None]:
    """Profile one artifact on one runtime. Returns ``(row, outputs used as the teacher reference)``."""
    row: dict[str, Any] = {
        "id": f"{art.label} @ {runtime}",
        "label": art.label,
        "role": art.role,
        "path": str(art.path),
        "runtime": runtime,
        "kernels": RUNTIMES[runtime].kernels,
        "error": None,
        **{k: v for k, v in facts.items() if k != "facts_error"},
    }
    if art.path.suffix.lower() in NATIVE_SUFFIXES:
        from edgekd.graph import read_tflite

        try:
            read_tflite(art.path)  # a corrupt file never reaches a runtime (nor costs a child process)
        except EdgekdError as e:
            row["error"] = str(e)
            return row, None
        return _native_row(row, art, runtime, facts, ctx)
    return _measure_row(row, art, runtime, facts, ctx)


def _native_row(row: dict[str, Any], art: Artifact, runtime: str, *args: Any) -> tuple[dict[str, Any], Any]:
    """:func:`_measure_row` in a forked child with a time and memory limit (LiteRT / TFLite Micro crash
    on corrupt models); a crash becomes the row's one-line error."""
    from edgekd.child import ChildFailed, run_in_child

    try:
        return run_in_child(_measure_row, row, art, runtime, *args, what=f"{art.path}: {runtime}")
    except ChildFailed as e:
        row["error"] = str(_located(e, art.path) if runtime == "tflm" else e)
    except EdgekdError as e:
        row["error"] = str(e)
    return row, None


def _located(e: Any, path: Path) -> Any:
    """A TFLite Micro crash with the operator it happened in, when a model prefix reproduces it."""
    from edgekd.graph.tflm import crash_operator

    if e.kind != "signal":
        return e
    try:
        op = crash_operator(read_model_bytes(path), str(path))
    except EdgekdError:
        return e
    return e.replace(at=f" at or before {op}") if op else e


def _load_measuring_rss(
    runtime: str, path: Path, data: EvalSet | None, opts: ProfileOptions
) -> tuple[Any, Any, Any]:
    """``(runtime, batch-1 sample, rss)``: the model loaded and run once, host RSS as ``opts.rss`` asks."""

    def load_and_run_once() -> Any:
        r = open_runtime(runtime, path, threads=opts.threads)
        sample = data.x[:1] if data is not None else None
        if sample is None:
            sample = np.random.default_rng(0).standard_normal(r.input_shape).astype(np.float32)
        r.runner(sample)()
        return r, sample

    if opts.rss == "subprocess":
        rt, sample = load_and_run_once()
        return rt, sample, subprocess_peak_rss(runtime, path, opts.threads)
    if opts.rss == "inprocess":
        (rt, sample), rss = measure_peak_rss(load_and_run_once)
        return rt, sample, rss
    rt, sample = load_and_run_once()  # off: in-process figures mix every runtime loaded so far
    return rt, sample, None


def _measure_row(
    row: dict[str, Any], art: Artifact, runtime: str, facts: dict[str, Any], ctx: RowContext
) -> tuple[dict[str, Any], np.ndarray | None]:
    """Load, time and evaluate one artifact on one runtime, filling ``row``."""
    data, opts = ctx.data, ctx.opts
    rt = None
    ref_outputs = None
    try:
        rt, sample, rss = _load_measuring_rss(runtime, art.path, data, opts)
        row["precision"] = facts.get("precision") or rt.precision
        row["input_shape"] = list(rt.input_shape)
        row["rss"] = rss
        row["threads"] = opts.threads if runtime not in ("tflm",) else 1
        row["latency"] = latency_stats(rt.runner(sample), opts.warmup, opts.runs)
        if runtime == "tflm" and "macs" in facts:
            row["mcu_estimate"] = {
                t["name"]: mcu_latency_estimate(facts["macs"]["total"], t["clock_hz"], t["cycles_per_mac"])
                for t in ctx.targets
                if t.get("clock_hz") and t.get("cycles_per_mac")
            }
        if data is not None:
            outputs = rt.predict(data.x)
            row["accuracy"] = _accuracy(
                rt, data, outputs, None if art.role == "teacher" else ctx.teacher_outputs
            )
            if art.role == "teacher":  # the reference the others compare with
                ref_outputs = outputs
    except Exception as e:  # noqa: BLE001  (one artifact's failure must not stop the others)
        text = error_line(e)  # a runtime's own exception does not name the file: say which one failed
        row["error"] = text if isinstance(e, EdgekdError) else f"{art.path}: {runtime} failed ({text})"
    finally:
        if rt is not None:
            rt.close()
    return row, ref_outputs
