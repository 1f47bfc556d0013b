"""Conversion routes to TFLite, registered by name, tried in order with automatic fallback.

A route takes the :class:`~edgekd.export.context.ExportContext` and the quantizations wanted and returns
``{quant: flatbuffer bytes}`` (``fp32`` always included), or raises. Routes:

* ``onnx2tf``: the ONNX model, after :mod:`edgekd.export.fold` (constant and static-shape subgraphs, such
  as the TorchScript exporter's LSTM/GRU zero state) and :mod:`edgekd.export.lower` (hardsigmoid, LSTM,
  GRU), through onnx2tf (fp32, fp16, dynamic-range, full-integer int8 with int8 input and output). Any
  source.
* ``litert-torch``: PyTorch sources only; ``litert_torch.convert`` to fp32, then ``ai-edge-quantizer``'s
  static int8 recipe (int8 weights and activations) on the calibration samples, with int8 input/output.
  Needs the optional packages ``litert-torch`` and ``ai-edge-quantizer`` (``pip install 'edgekd[litert]'``).

:func:`convert` tries ``ctx.route`` alone when one was asked for, else :data:`DEFAULT_ORDER`; every
attempt (route, ok, seconds, error) lands in ``export.json`` under ``route``. When all fail, the error
names the source file and the ONNX node / PyTorch layer, and each converter's full log is kept beside the
export folder (``<folder>.<route>.log``).
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edgekd.errors import EdgekdError
from edgekd.export.context import ExportContext

RouteFn = Callable[[ExportContext, list[str]], dict[str, bytes]]
ROUTES: dict[str, RouteFn] = {}
ROUTE_QUANTS: dict[str, tuple[str, ...]] = {}
DEFAULT_ORDER = ("onnx2tf", "litert-torch")


def register_route(name: str, quants: tuple[str, ...]) -> Callable[[RouteFn], RouteFn]:
    """Register a conversion route producing the given quantizations."""

    def deco(fn: RouteFn) -> RouteFn:
        ROUTES[name] = fn
        ROUTE_QUANTS[name] = quants
        return fn

    return deco


class RouteUnavailable(EdgekdError):
    """The route cannot run here (missing package, unsupported source or quantization)."""


def _layer_of_node(ctx: ExportContext, node: str | None) -> str:
    from edgekd.export.checks import describe_node
    from edgekd.export.onnx import node_module_paths

    if not node or ctx.onnx_model is None:
        return ""
    found = [n for n in ctx.onnx_model.graph.node if n.name == node]
    if not found:
        return f" at ONNX node '{node}'"
    return f" at {describe_node(found[0], node_module_paths(ctx.onnx_model))}"


@register_route("onnx2tf", ("fp32", "fp16", "dynamic", "int8"))
def onnx2tf_route(ctx: ExportContext, quants: list[str]) -> dict[str, bytes]:
    import onnx

    from edgekd.export import checks as ck
    from edgekd.export import tflite as tfl
    from edgekd.export.fold import fold_constants
    from edgekd.export.lower import lower

    model = onnx.load(str(ctx.onnx_path))
    model, folded = fold_constants(model)
    if folded["nodes"]:
        ctx.record.setdefault("onnx", {})["folded"] = folded
        ctx.log.step(f"folded {folded['nodes']} constant / static-shape ONNX node(s)")
    model, lowered = lower(model, str(ctx.src.path))
    if lowered:
        ctx.record.setdefault("onnx", {})["lowered"] = lowered
        ctx.log.step("lowered for TFLite Micro: " + ", ".join(f"{d['op']} '{d['node']}'" for d in lowered))
    path = ctx.work / "model_for_onnx2tf.onnx"
    onnx.save(model, str(path))
    conv = sorted(set(quants) | {"fp32"}, key=tfl.QUANTS.index)
    try:
        files = tfl.convert(path, ctx.work, conv, ctx.calib_x, ctx.input_name, sample_x=ctx.eval.x[:20])
    except tfl.FlexOpError as e:
        raise ck.flex_op_error(e.ops, ctx.onnx_model, ctx.target_name) from None
    except tfl.ConversionError as e:
        if e.log is not None:
            ctx.logs["onnx2tf"] = e.log
        raise EdgekdError(f"{e}{_layer_of_node(ctx, e.node)}") from None
    ctx.logs["onnx2tf"] = ctx.work / "onnx2tf.log"
    return {q: files[q].read_bytes() for q in conv}


@register_route("litert-torch", ("fp32", "int8"))
def litert_torch_route(ctx: ExportContext, quants: list[str]) -> dict[str, bytes]:
    from edgekd.export import litert

    if ctx.src.torch_model is None:
        raise RouteUnavailable("litert-torch converts PyTorch models; this source is an ONNX file")
    why = litert.available()
    if why:
        raise RouteUnavailable(why)
    log = ctx.work / "litert-torch.log"
    ctx.logs["litert-torch"] = log
    return litert.convert(ctx.src.torch_model, ctx.src.input_shape, quants, ctx.calib_x, log)


def convert(ctx: ExportContext, quants: list[str]) -> dict[str, bytes]:
    """Run the requested route, or each of :data:`DEFAULT_ORDER` until one succeeds; records attempts."""
    if ctx.route is not None and ctx.route not in ROUTES:
        raise EdgekdError(f"--route {ctx.route}: valid: {', '.join(ROUTES)}")
    order = [ctx.route] if ctx.route else list(DEFAULT_ORDER)
    attempts: list[dict[str, Any]] = []
    ctx.record["route"] = {"requested": ctx.route or "auto", "attempts": attempts}
    for name in order:
        unsupported = [q for q in quants if q not in ROUTE_QUANTS[name]]
        t0 = time.perf_counter()
        try:
            if unsupported:
                raise RouteUnavailable(f"{name} does not produce {', '.join(unsupported)}")
            ctx.log.step(f"converting to TFLite with {name} ({_conversion(ctx, quants)})")
            files = ROUTES[name](ctx, quants)
            if ctx.is_mcu and "int8" in files:  # a route succeeds only with a file TFLite Micro loads
                _check_tflm(ctx, files["int8"])
        except EdgekdError as e:
            attempts.append({"route": name, "ok": False, "seconds": round(time.perf_counter() - t0, 2),
                             "error": str(e), "skipped": isinstance(e, RouteUnavailable)})  # fmt: skip
            if not isinstance(e, RouteUnavailable) and ctx.route is None:
                ctx.log.warn(f"{name} failed ({str(e)[:160]}); trying the next route")
            continue
        attempts.append({"route": name, "ok": True, "seconds": round(time.perf_counter() - t0, 2)})
        ctx.record["route"]["used"] = name
        return files
    raise _failure(ctx, attempts)


def _conversion(ctx: ExportContext, quants: list[str]) -> str:
    """``"fp32, int8; int8 calibrated on 359 samples"``: what a route is asked to produce."""
    what = ", ".join(sorted(set(quants) | {"fp32"}))
    if "int8" in quants and ctx.calib_x is not None:
        what += f"; int8 calibrated on {len(ctx.calib_x)} samples"
    return what


def _check_tflm(ctx: ExportContext, data: bytes) -> None:
    """Raise the unsupported-op error (naming the PyTorch layer) when TFLite Micro cannot load the file."""
    from edgekd.export import checks as ck
    from edgekd.export.micro import RESOLVER_METHODS
    from edgekd.graph import check_tflm_loadable, read_tflite

    model = read_tflite(data)
    missing = [n for n in model.op_names() if n not in RESOLVER_METHODS]
    if missing:
        raise ck.unsupported_op_error(
            model, ctx.onnx_model, "TFLite Micro has no kernel for it", missing, ctx.target_name
        )
    try:
        check_tflm_loadable(data)
    except EdgekdError as e:
        raise ck.unsupported_op_error(model, ctx.onnx_model, str(e), None, ctx.target_name) from None


def _failure(ctx: ExportContext, attempts: list[dict[str, Any]]) -> EdgekdError:
    tried = [a for a in attempts if not a.get("skipped")] or attempts
    kept = keep_logs(ctx)
    where = f"; full log: {', '.join(str(p) for p in kept)}" if kept else ""
    parts = "; ".join(f"{a['route']}: {a['error']}" for a in tried)
    return EdgekdError(f"{ctx.src.path}: conversion to TFLite failed ({parts}){where}")


def keep_logs(ctx: ExportContext) -> list[Path]:
    """Copy each converter's full log next to the export folder (it survives the temporary work folder)."""
    out_dir = ctx.out_dir
    kept = []
    for route, log in ctx.logs.items():
        if log.is_file():
            dst = out_dir.parent / f"{out_dir.name}.{route}.log"
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(log, dst)
            kept.append(dst)
    return kept
