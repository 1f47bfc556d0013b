"""Numerics checks run after every export, and naming the PyTorch layer behind an unsupported op."""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from edgekd.errors import EdgekdError
from edgekd.metrics.anomaly import roc_auc
from edgekd.metrics.classification import accuracy, top1_agreement
from edgekd.metrics.reconstruction import reconstruction_metrics, reconstruction_scores

FP32_ATOL = 1e-3
FP32_RTOL = 1e-3


def max_abs_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a.reshape(len(a), -1) - b.reshape(len(b), -1)))) if len(a) else 0.0


def fp32_tolerance(reference: np.ndarray) -> float:
    """Allowed max |difference| of float logits: ``atol + rtol * max|reference|``."""
    return FP32_ATOL + FP32_RTOL * float(np.max(np.abs(reference))) if reference.size else FP32_ATOL


def check_fp32(name: str, got: np.ndarray, reference: np.ndarray, ref_name: str) -> tuple[float, float]:
    """Max |diff| of float outputs; EdgekdError when beyond :func:`fp32_tolerance`."""
    diff = max_abs_diff(got, reference)
    tol = fp32_tolerance(reference)
    if not np.isfinite(diff) or diff > tol:
        raise EdgekdError(
            f"{name} does not match {ref_name}: max |difference| {diff:.3g} > tolerance {tol:.3g}; the conversion is wrong"
        )
    return diff, tol


def compare(task: str, got: np.ndarray, reference: np.ndarray, x: np.ndarray, y: np.ndarray | None,
            prefix: str) -> dict[str, Any]:  # fmt: skip
    """Metrics of converted/quantized outputs ``got`` against the float ``reference`` on inputs ``x``.

    classification: ``<prefix>_accuracy`` (null without labels) and ``<prefix>_top1_agreement``;
    reconstruction: ``<prefix>_max_abs_error``, ``<prefix>_sqnr_db``, ``<prefix>_score_spearman`` (rank
    correlation of per-sample anomaly scores = reconstruction MSE) and, with 0/1 anomaly labels,
    ``<prefix>_auc`` (ROC AUC of those scores).
    """
    if task == "reconstruction":
        try:
            m = reconstruction_metrics(got, reference, x)
        except ValueError as e:
            raise EdgekdError(f"task reconstruction: {e}; is the model an autoencoder?") from None
        return {f"{prefix}_{k}": v for k, v in {**m, **_anomaly_auc(got, x, y)}.items()}
    return {
        f"{prefix}_accuracy": accuracy(got, y),
        f"{prefix}_top1_agreement": top1_agreement(got, reference),
    }


def _anomaly_auc(outputs: np.ndarray, x: np.ndarray, y: np.ndarray | None) -> dict[str, Any]:
    """``{"auc": ROC AUC}`` of the reconstruction scores against 0/1 anomaly labels (``{}`` without both)."""
    if y is None or len(y) != len(x) or set(np.unique(y).tolist()) != {0, 1}:
        return {}
    return {"auc": roc_auc(reconstruction_scores(outputs, x), np.asarray(y))}


def float_summary(task: str, reference: np.ndarray, x: np.ndarray, y: np.ndarray | None) -> dict[str, Any]:
    """What the float model itself scores: accuracy, or the mean reconstruction MSE."""
    if task == "reconstruction":
        try:
            return {"float_score_mean": float(reconstruction_scores(reference, x).mean()),
                    **{f"float_{k}": v for k, v in _anomaly_auc(reference, x, y).items()}}  # fmt: skip
        except ValueError as e:
            raise EdgekdError(f"task reconstruction: {e}; is the model an autoencoder?") from None
    return {"float_accuracy": accuracy(reference, y)}


# --- unsupported op -> PyTorch layer ---------------------------------------------------------------
# TFLite builtin -> ONNX op types it is converted from (onnx2tf); unknown ops fall back to the name.
TFLITE_FROM_ONNX: dict[str, tuple[str, ...]] = {
    "CONV_2D": ("Conv",), "DEPTHWISE_CONV_2D": ("Conv",), "TRANSPOSE_CONV": ("ConvTranspose",),
    "FULLY_CONNECTED": ("Gemm", "MatMul"), "BATCH_MATMUL": ("MatMul", "Einsum"),
    "MEAN": ("ReduceMean", "GlobalAveragePool"), "AVERAGE_POOL_2D": ("AveragePool", "GlobalAveragePool"),
    "MAX_POOL_2D": ("MaxPool", "GlobalMaxPool"), "LOGISTIC": ("Sigmoid",), "GELU": ("Gelu", "Erf"),
    "HARD_SWISH": ("HardSwish",), "RESHAPE": ("Reshape", "Flatten"), "TOPK_V2": ("TopK",),
    "RSQRT": ("Sqrt", "Reciprocal"), "SQUARED_DIFFERENCE": ("Sub", "Pow"), "SQUARE": ("Pow", "Mul"),
    "POW": ("Pow",), "REDUCE_MAX": ("ReduceMax",), "SUM": ("ReduceSum",), "REDUCE_PROD": ("ReduceProd",),
    "CUMSUM": ("CumSum",), "ARG_MAX": ("ArgMax",), "ARG_MIN": ("ArgMin",), "CONCATENATION": ("Concat",),
    "RESIZE_BILINEAR": ("Resize",), "RESIZE_NEAREST_NEIGHBOR": ("Resize",), "LEAKY_RELU": ("LeakyRelu",),
    "PRELU": ("PRelu",), "LOG_SOFTMAX": ("LogSoftmax",), "ATAN2": ("Atan",), "REVERSE_V2": ("Slice",),
    "ONE_HOT": ("OneHot",), "NON_MAX_SUPPRESSION_V5": ("NonMaxSuppression",),
}  # fmt: skip


def _norm(s: str) -> str:
    return re.sub(r"[^a-z0-9]", "", s.lower())


def _onnx_types(opcode: str) -> set[str]:
    return {_norm(t) for t in TFLITE_FROM_ONNX.get(opcode, ())} | {_norm(opcode)}


def layer_of_op(tfl: Any, op_index: int, onnx_model: Any | None) -> dict[str, Any]:
    """Best guess of the ONNX node and PyTorch module a TFLite operator came from.

    onnx2tf keeps ONNX names in some TFLite tensor names; otherwise the k-th TFLite op converted from an ONNX op type
    (CONV_2D and DEPTHWISE_CONV_2D: Conv) is matched to the k-th ONNX node of it (execution order is kept).
    """
    from edgekd.export.onnx import node_module_paths

    op = tfl.operators[op_index]
    out_names = [tfl.tensors[i].name for i in op.outputs if i >= 0]
    info: dict[str, Any] = {
        "tflite_op": op.name,
        "operator": op_index,
        "tflite_tensor": out_names[0] if out_names else "",
    }
    if onnx_model is None:
        return info
    nodes = list(onnx_model.graph.node)
    paths = node_module_paths(onnx_model)
    node = None
    for n in nodes:  # names carried over into the TFLite tensor names
        if (
            n.name
            and len(n.name) > 3
            and any(n.name in t or n.name.strip("/").replace("/", "_") in t for t in out_names)
        ):
            node = n
            break
    if node is None:
        types = _onnx_types(op.opcode)
        cands = [n for n in nodes if _norm(n.op_type) in types]
        k = sum(
            1 for o in tfl.operators[:op_index] if _onnx_types(o.opcode) & types
        )  # CONV_2D, DEPTHWISE: Conv
        if cands:
            node = cands[min(k, len(cands) - 1)]
    if node is not None:
        info.update(onnx_node=node.name, onnx_op=node.op_type, layer=paths.get(node.name, ""))
    return info


def describe_layer(info: dict[str, Any]) -> str:
    if info.get("layer"):
        return f"PyTorch layer '{info['layer']}' (ONNX {info['onnx_op']} node '{info['onnx_node']}')"
    if info.get("onnx_node"):
        return f"ONNX {info['onnx_op']} node '{info['onnx_node']}'"
    return f"TFLite tensor '{info.get('tflite_tensor', '?')}'"


def unsupported_op_error(tfl: Any, onnx_model: Any | None, detail: str, op_names: list[str] | None = None,
                         target: str = "tflite-micro") -> EdgekdError:  # fmt: skip
    """An EdgekdError naming the unsupported op(s) and the PyTorch layer(s) they come from."""
    indices: list[int] = []
    m = re.search(r"\(operator (\d+)\)", detail)
    if m and int(m.group(1)) < len(tfl.operators):
        indices.append(int(m.group(1)))
    names = set(op_names or [])
    if not names and not indices:
        names = {n for n in tfl.op_names() if re.search(rf"\b{re.escape(n)}\b", detail)}
    for i, op in enumerate(tfl.operators):
        if op.name in names and i not in indices:
            indices.append(i)
    parts = []
    for i in indices[:4]:
        info = layer_of_op(tfl, i, onnx_model)
        parts.append(f"{info['tflite_op']} from {describe_layer(info)}")
    what = "; ".join(parts) if parts else "an op"
    reason = detail.split(": ", 1)[-1] if detail else "no kernel"
    return EdgekdError(f"unsupported op for {target}: {what}: {reason}")


def onnx_layers_of_type(onnx_model: Any | None, op_types: list[str]) -> list[str]:
    """``"PyTorch layer 'act' (ONNX Erf node 'n')"`` for every ONNX node of the given op types."""
    if onnx_model is None:
        return []
    from edgekd.export.onnx import node_module_paths

    paths = node_module_paths(onnx_model)
    wanted = {_norm(t) for t in op_types}
    return [describe_node(n, paths) for n in onnx_model.graph.node if _norm(n.op_type) in wanted]


def describe_node(node: Any, paths: dict[str, str]) -> str:
    """:func:`describe_layer` of an ONNX node (``paths``: :func:`~edgekd.export.onnx.node_module_paths`)."""
    return describe_layer(
        {"onnx_node": node.name, "onnx_op": node.op_type, "layer": paths.get(node.name, "")}
    )


def flex_op_error(ops: list[str], onnx_model: Any | None, target: str) -> EdgekdError:
    """An EdgekdError for TensorFlow (Flex) ops the converter had to fall back to, with their layers."""
    layers = onnx_layers_of_type(onnx_model, ops)
    where = f" from {'; '.join(layers[:4])}" if layers else ""
    return EdgekdError(
        f"unsupported op for {target}: {', '.join(ops)}{where}: TFLite has no builtin kernel for it (needs the "
        "TensorFlow Flex delegate, which TFLite Micro and plain LiteRT lack); replace the layer"
    )
