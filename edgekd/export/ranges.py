"""Activation ranges for int8: min/max (the converter's), percentile and MSE-optimal clipping, chosen
by the int8 accuracy measured on a held-out split (the validation split; never the test split).

The converter (onnx2tf -> the TFLite converter) calibrates min/max on the calibration samples. The other
candidates are computed here from the float activations of the same samples (the fp32 ``.tflite`` of the
same conversion, whose operators match the int8 model's one for one) and written into the int8 model's
tensor quantization parameters (:func:`edgekd.graph.requantize.with_activation_ranges`: biases
re-quantized, tied ops follow, model input/output and fixed-range ops kept). Each candidate is measured on
the held-out split with the int8 runtime of the export (TFLite Micro for MCU targets); the best one is
kept (ties keep min/max, the converter's own file). ``export.json``'s ``calibration.ranges`` records
the candidates, their held-out accuracies and the choice.

A student trained with quantization-aware training (``train.qat``, :mod:`edgekd.distill.qat`) carries
its learned ranges in its checkpoint (``meta.qat``, one per module path); the candidate ``learned``
writes them into the int8 model. Each learned point is matched to the int8 tensor that holds the same
values: the sorted float activations of the PyTorch module and of the fp32 ``.tflite`` tensor on the
calibration samples agree (sorting makes the comparison independent of NCHW / NHWC layout and of the
converter's fusions). Tensors without a match keep min/max; the record counts both.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from edgekd.errors import EdgekdError
from edgekd.export.quantize import RANGES
from edgekd.graph import requantize as rq
from edgekd.graph.quant import dequantize, quantize
from edgekd.graph.tflite_model import TFLiteModel

METHODS = RANGES
PERCENTILE = 99.99
MAX_VALUES = 1 << 20  # float values kept per tensor for the percentile / MSE search
MAX_HELD_OUT = 1000
MSE_GRID = 64
MATCH_SAMPLES = 16  # calibration samples on which learned points are matched to int8 tensors
MATCH_TOLERANCE = 1e-3  # max |sorted difference| / value range of a match (fp32 round-off is ~1e-6)


def percentile_range(v: np.ndarray, pct: float = PERCENTILE) -> tuple[float, float]:
    """``[lo, hi]`` at the ``100 - pct`` and ``pct`` percentiles of the values."""
    lo, hi = np.percentile(v, [100.0 - pct, pct])
    return float(lo), float(hi)


def _qdq_mse(v: np.ndarray, lo: float, hi: float) -> float:
    scale, zp = rq.qparams_for_range(lo, hi)
    return float(np.mean((dequantize(quantize(v, scale, zp, np.int8), scale, zp) - v) ** 2))


def mse_range(v: np.ndarray, grid: int = MSE_GRID) -> tuple[float, float]:
    """The range ``a * [min, max]`` (``a`` in (0, 1]) whose int8 quantize-dequantize has the least MSE."""
    lo, hi = float(min(v.min(), 0.0)), float(max(v.max(), 0.0))
    if hi - lo <= 0:
        return lo, hi
    best = min(np.linspace(1.0 / grid, 1.0, grid), key=lambda a: _qdq_mse(v, a * lo, a * hi))
    return float(best * lo), float(best * hi)


def float_activations(
    fp32: TFLiteModel, int8: TFLiteModel, x: np.ndarray, tensors: list[int]
) -> dict[int, np.ndarray]:
    """``{int8 tensor: float values}`` of the fp32 twin on ``x`` (model input layout), at most
    :data:`MAX_VALUES` values per tensor (an even stride over each sample)."""
    pos = {t: k for k, (_, t) in enumerate(rq.op_output_tensors(int8))}
    fp_outs = [t for _, t in rq.op_output_tensors(fp32)]
    wanted = [fp_outs[pos[t]] for t in tensors]
    per_sample = [max(1, MAX_VALUES // max(1, len(x))) for _ in tensors]
    acc: list[list[np.ndarray]] = [[] for _ in tensors]
    for vals, _ in rq.iter_tensors(fp32, x, wanted):
        for k, v in enumerate(vals):
            flat = v.ravel()
            acc[k].append(flat[:: max(1, -(-flat.size // per_sample[k]))])
    return {t: np.concatenate(a) for t, a in zip(tensors, acc)}


def candidates(
    fp32: TFLiteModel, int8: TFLiteModel, x: np.ndarray, pct: float = PERCENTILE
) -> dict[str, bytes]:
    """``{method: int8 flatbuffer}`` for min/max (unchanged), percentile and MSE ranges."""
    if not same_graph(fp32, int8):
        raise EdgekdError(
            f"{int8.source}: its operators do not match the fp32 model's; ranges cannot be moved"
        )
    tensors = sorted(rq.rerangeable(int8))
    out = {"minmax": int8.data}
    if not tensors:
        return out
    values = float_activations(fp32, int8, x, tensors)
    out["percentile"] = rq.with_activation_ranges(
        int8, {t: percentile_range(values[t], pct) for t in tensors}
    )
    out["mse"] = rq.with_activation_ranges(int8, {t: mse_range(values[t]) for t in tensors})
    return out


def module_activations(model: Any, x: np.ndarray, modules: list[str], source: str) -> dict[str, np.ndarray]:
    """``{module path: output values}`` of the PyTorch ``model`` on ``x`` (the float network)."""
    import torch

    out: dict[str, list[np.ndarray]] = {m: [] for m in modules}
    handles = []
    try:
        for path in modules:
            try:
                m = model.get_submodule(path)
            except AttributeError:
                raise EdgekdError(
                    f"{source}: key 'meta.qat' names module {path!r}, which the model lacks; "
                    "re-run the QAT stage, or export with --ranges minmax"
                ) from None
            handles.append(m.register_forward_hook(
                lambda _m, _a, o, p=path: out[p].append(o.detach().numpy().reshape(len(o), -1))
            ))  # fmt: skip
        with torch.no_grad():
            model(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)))
    finally:
        for h in handles:
            h.remove()
    return {m: np.concatenate(v, 1).ravel() for m, v in out.items() if v}


def match_learned(
    fp32: TFLiteModel, int8: TFLiteModel, learned: dict[str, tuple[float, float]], model: Any,
    x_torch: np.ndarray, x_tflite: np.ndarray, source: str,
) -> tuple[dict[int, tuple[float, float]], list[str]]:  # fmt: skip
    """``{int8 tensor: learned range}`` for the re-rangeable tensors whose fp32 values equal a learned
    point's module output on the samples, and the learned points left without a tensor."""
    tensors = sorted(rq.rerangeable(int8))
    pos = {t: k for k, (_, t) in enumerate(rq.op_output_tensors(int8))}
    fp_outs = [t for _, t in rq.op_output_tensors(fp32)]
    values: list[list[np.ndarray]] = [[] for _ in tensors]
    for vals, _ in rq.iter_tensors(fp32, x_tflite, [fp_outs[pos[t]] for t in tensors]):
        for k, v in enumerate(vals):
            values[k].append(np.asarray(v, np.float32).ravel())
    torch_vals = {m: np.sort(v) for m, v in module_activations(model, x_torch, list(learned), source).items()}
    ranges: dict[int, tuple[float, float]] = {}
    used: set[str] = set()
    for t, vs in zip(tensors, values):
        tv = np.sort(np.concatenate(vs)) if vs else np.zeros(0, np.float32)
        scale = float(tv[-1] - tv[0]) + 1e-12 if len(tv) else 1.0
        errors = {m: float(np.abs(v - tv).max()) / scale for m, v in torch_vals.items() if v.size == tv.size}
        best = min(errors, key=errors.__getitem__, default=None)
        if best is not None and errors[best] <= MATCH_TOLERANCE:
            ranges[t] = learned[best]
            used.add(best)
    return ranges, [m for m in learned if m not in used]


def learned_ranges(src: Any) -> dict[str, tuple[float, float]] | None:
    """The QAT ranges of the exported student (``meta.qat`` of its checkpoint), None for other sources."""
    from edgekd.distill.qat import read_qat_record

    meta = (src.record or {}).get("meta")
    if not isinstance(meta, dict) or "qat" not in meta:
        return None
    where = src.run.trained_model() if src.run is not None else src.path
    return read_qat_record(meta["qat"], str(where))


def same_graph(a: TFLiteModel, b: TFLiteModel) -> bool:
    """True when two models have the same operator sequence (an fp32 / int8 pair from one conversion)."""
    return [o.opcode for o in a.operators] == [o.opcode for o in b.operators]


def held_out_split(splits: Any | None, labelled: bool = True) -> tuple[np.ndarray, np.ndarray | None] | None:
    """The validation split (x, y), at most :data:`MAX_HELD_OUT` rows; None without validation data (or,
    with ``labelled``, without its labels)."""
    val = None if splits is None else getattr(splits, "val", None)
    if val is None or len(val) == 0 or (labelled and val.y is None):
        return None
    return val.x[:MAX_HELD_OUT], (None if val.y is None else val.y[:MAX_HELD_OUT])


def _outputs(runtime: str, data: bytes, path: Any, x: np.ndarray, channels_last: bool) -> np.ndarray:
    from edgekd.runtimes import run_outputs

    path.write_bytes(data)
    return run_outputs(runtime, path, x, channels_last=channels_last)


def _accuracy(
    runtime: str, data: bytes, path: Any, x: np.ndarray, y: np.ndarray, channels_last: bool
) -> float:
    return float((_outputs(runtime, data, path, x, channels_last).argmax(1) == y).mean())


def _held_out_scorer(ctx: Any, fp32: bytes, runtime: str, channels_last: bool
                     ) -> tuple[str, int, Callable[[str, bytes], float]] | None:  # fmt: skip
    """``(metric, samples, score(name, int8 file))`` on the validation split: top-1 accuracy for a
    classifier; for an autoencoder the rank correlation of its per-sample anomaly scores with the float
    model's (what an anomaly threshold sees). None without validation data."""
    from edgekd.metrics.ranks import spearman
    from edgekd.metrics.reconstruction import reconstruction_scores

    labelled = ctx.task == "classification"
    held = (
        held_out_split(ctx.src.splits, labelled) if ctx.task in ("classification", "reconstruction") else None
    )
    if held is None:
        return None
    x, y = held
    if labelled:
        return "accuracy", len(x), lambda name, data: _accuracy(
            runtime, data, ctx.work / f"ranges_{name}.tflite", x, y, channels_last)  # fmt: skip
    ref = reconstruction_scores(
        _outputs("litert", fp32, ctx.work / "ranges_fp32.tflite", x, channels_last), x
    )

    def score(name: str, data: bytes) -> float:
        got = reconstruction_scores(
            _outputs(runtime, data, ctx.work / f"ranges_{name}.tflite", x, channels_last), x
        )
        return spearman(got, ref) or 0.0

    return "score_spearman", len(x), score


def choose(ctx: Any, files: dict[str, bytes], method: str = "auto") -> None:
    """Replace ``files["int8"]`` by the range candidate ``method`` asks for (``auto``: the best on the
    held-out split) and record ``calibration.ranges`` in ``export.json``."""
    from edgekd.graph import read_tflite
    from edgekd.runtimes import adapt_input

    if method not in METHODS:
        raise EdgekdError(f"--ranges {method}: valid: {', '.join(METHODS)}")
    learned = learned_ranges(ctx.src)
    rec: dict[str, Any] = {"requested": method, "percentile": PERCENTILE}
    ctx.record.setdefault("calibration", {})["ranges"] = rec
    if method == "learned" and learned is None:
        raise EdgekdError(
            f"{ctx.src.path}: --ranges learned needs a student trained with train.qat (its checkpoint has no "
            "meta.qat); use --ranges auto"
        )
    if method == "minmax":
        rec.update(chosen="minmax", note="the converter's min/max on the calibration samples")
        return
    fp32, int8 = (
        read_tflite(files["fp32"], source="fp32 model"),
        read_tflite(files["int8"], source="int8 model"),
    )
    if not same_graph(fp32, int8):
        if learned is not None:
            route = ctx.record.get("route", {}).get("used", "this")
            raise EdgekdError(
                f"{ctx.src.path}: the {route} route's int8 model does not match its fp32 model operator for "
                "operator, so the QAT student's learned ranges cannot be written into it; export with "
                "--route onnx2tf, or pass --ranges minmax to drop the learned ranges"
            )
        rec.update(chosen="minmax", note="the fp32 and int8 models' operators differ (route): min/max kept")
        return
    shape = tuple(fp32.input_details()[0]["shape"])
    channels_last = tuple(shape[1:]) != tuple(ctx.calib_x.shape[1:])
    x_tflite = adapt_input(ctx.calib_x, shape, channels_last, "calibration samples")
    cands = _learned_candidate(ctx, fp32, int8, learned, x_tflite, rec) if learned is not None else {}
    if method in ("auto", "percentile", "mse"):
        cands.update(candidates(fp32, int8, x_tflite))
    rec["rerangeable_tensors"] = len(rq.rerangeable(int8))
    if method != "auto":
        files["int8"] = cands.get(method, files["int8"])
        rec["chosen"] = method if method in cands else "minmax"
        return
    _choose_on_held_out(ctx, files, cands, rec, channels_last)


def _learned_candidate(ctx: Any, fp32: TFLiteModel, int8: TFLiteModel, learned: dict[str, tuple[float, float]],
                       x_tflite: np.ndarray, rec: dict[str, Any]) -> dict[str, bytes]:  # fmt: skip
    """``{"learned": int8 model with the QAT ranges}``; the match is recorded in ``rec["learned"]``."""
    n = MATCH_SAMPLES
    matched, unused = match_learned(fp32, int8, learned, ctx.src.torch_model, ctx.calib_x[:n], x_tflite[:n],
                                    str(ctx.src.path))  # fmt: skip
    rec["learned"] = {"points": len(learned), "tensors_matched": len(matched),
                      "points_without_tensor": unused, "match_samples": int(min(n, len(x_tflite)))}  # fmt: skip
    ctx.log.step(f"QAT ranges: {len(matched)} of {len(rq.rerangeable(int8))} re-rangeable int8 tensors "
                 f"matched to learned points")  # fmt: skip
    return {"learned": rq.with_activation_ranges(int8, matched)} if matched else {}


def _choose_on_held_out(ctx: Any, files: dict[str, bytes], cands: dict[str, bytes], rec: dict[str, Any],
                        channels_last: bool) -> None:  # fmt: skip
    """Keep the candidate that scores best on the validation split (:func:`_held_out_scorer`; first
    maximum: learned ranges, then min/max, win ties)."""
    runtime = "tflm" if ctx.is_mcu else "litert"
    scorer = _held_out_scorer(ctx, files["fp32"], runtime, channels_last) if len(cands) > 1 else None
    default = "learned" if "learned" in cands else "minmax"
    if scorer is None:
        rec.update(chosen=default, note=f"no validation split (or nothing to re-range): {default} kept")
        files["int8"] = cands.get(default, files["int8"])
        return
    metric, samples, score = scorer
    rec["held_out"] = {"split": "val", "samples": int(samples), "runtime": runtime, "metric": metric}
    results = [{"method": name, f"held_out_{metric}": score(name, data)} for name, data in cands.items()]
    best = max(results, key=lambda r: r[f"held_out_{metric}"])
    rec.update(candidates=results, chosen=best["method"])
    files["int8"] = cands[best["method"]]
    ctx.log.step(f"int8 activation ranges ({metric}): " + ", ".join(
        f"{r['method']} {r[f'held_out_{metric}']:.4f}" for r in results
    ) + f" on {samples} validation samples; chosen {best['method']}")  # fmt: skip
