"""Constant folding of an ONNX model whose input shape is static (before onnx2tf).

The TorchScript exporter builds an LSTM/GRU's zero initial state from the input's shape
(``Shape -> Gather -> Unsqueeze -> Concat -> Expand``); onnx2tf cannot convert that subgraph
("Output tensors of a Functional model must be the output of a TensorFlow Layer") although every
value in it is known. :func:`fold_constants` replaces such nodes by initializers:

* ``Shape`` / ``Size`` of a tensor whose shape ONNX shape inference proves static -> a constant;
* a node of :data:`FOLDABLE` (shape arithmetic and cheap element-wise ops) whose inputs are all
  constants -> its value, computed by ``onnx.reference.ReferenceEvaluator``.

Bounded for untrusted models: a node is folded only when its constant inputs and its outputs (whose
shapes are inferred *before* anything is computed) each total at most ``max_bytes``; at most
:data:`MAX_ROUNDS` passes. Graph outputs, custom domains, subgraph ops, random and quantization ops are
never folded. Constant nodes and initializers only the folded nodes read are removed.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

import numpy as np

MAX_FOLD_BYTES = 4 << 20  # 4 MiB per node: its constant inputs, and separately its outputs
MAX_ROUNDS = 4
FOLDABLE = frozenset({  # shape arithmetic and cheap element-wise ops, all deterministic
    "Shape", "Size", "Gather", "Unsqueeze", "Squeeze", "Concat", "Reshape", "Flatten", "Expand",
    "ConstantOfShape", "Slice", "Split", "Range", "Tile", "Transpose", "Identity", "Cast", "Where", "Equal",
    "Less", "LessOrEqual", "Greater", "GreaterOrEqual", "Not", "And", "Or", "Add", "Sub", "Mul", "Div", "Mod",
    "Neg", "Abs", "Min", "Max", "Floor", "Ceil", "Sqrt", "Reciprocal", "Clip", "ReduceSum", "ReduceProd",
    "ReduceMin", "ReduceMax",
})  # fmt: skip


def static_shapes(model: Any) -> dict[str, tuple[int, ...]]:
    """Every tensor name whose shape ONNX shape inference (with data propagation) proves static."""
    import onnx

    try:
        inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
    except Exception:  # noqa: BLE001  (shape inference is best effort)
        inferred = model
    out: dict[str, tuple[int, ...]] = {}
    g = inferred.graph
    for v in [*g.input, *g.value_info, *g.output]:
        t = v.type.tensor_type
        shape = _static(t)
        if shape is not None:
            out[v.name] = shape
    return out


def _static(t: Any) -> tuple[int, ...] | None:
    """The shape of a ``TypeProto.Tensor`` when every dimension is a known non-negative number."""
    if not t.HasField("shape") or not all(d.HasField("dim_value") and d.dim_value >= 0 for d in t.shape.dim):
        return None
    return tuple(int(d.dim_value) for d in t.shape.dim)


def fold_constants(model: Any, max_bytes: int = MAX_FOLD_BYTES) -> tuple[Any, dict[str, Any]]:
    """Fold constant and static-shape nodes (in place); returns ``(model, record)`` for ``export.json``.

    The record: ``nodes`` (folded into constants), ``ops`` (count per op type), ``graph_nodes`` before and
    after (Constant nodes only the folded nodes read are removed too) and ``over_size_cap`` (nodes left
    unfolded by the size cap).
    """
    before = len(model.graph.node)
    folded: Counter[str] = Counter()
    over_cap: set[str] = set()
    feeds: set[str] = set()
    for _ in range(MAX_ROUNDS):
        if not _fold_round(model, max_bytes, folded, over_cap, feeds):
            break
    if folded:
        _prune(model.graph, feeds)
    return model, {
        "nodes": sum(folded.values()),
        "ops": dict(sorted(folded.items())),
        "graph_nodes": {"before": before, "after": len(model.graph.node)},
        "over_size_cap": len(over_cap),
    }


def constant_tensors(graph: Any) -> dict[str, Any]:
    """Name -> TensorProto of every initializer that is not also a graph input, and every Constant node."""
    from onnx import helper, numpy_helper

    inputs = {i.name for i in graph.input}
    out = {i.name: i for i in graph.initializer if i.name not in inputs}
    for node in graph.node:
        if node.op_type == "Constant" and node.domain in ("", "ai.onnx") and len(node.attribute) == 1:
            a = node.attribute[0]
            if a.name == "value":
                t = type(a.t)()
                t.CopyFrom(a.t)
                t.name = node.output[0]
                out[node.output[0]] = t
            elif a.name in ("value_float", "value_floats", "value_int", "value_ints"):
                dtype = np.float32 if "float" in a.name else np.int64
                value = np.asarray(helper.get_attribute_value(a), dtype)
                out[node.output[0]] = numpy_helper.from_array(value, node.output[0])
    return out


def _fold_round(model: Any, max_bytes: int, folded: Counter[str], over_cap: set[str], feeds: set[str]) -> int:
    """One pass in graph order; returns how many nodes it folded."""
    from onnx import numpy_helper

    graph = model.graph
    shapes = static_shapes(model)
    consts = constant_tensors(graph)
    graph_outputs = {o.name for o in graph.output}
    keep, new_inits, n = [], [], 0
    for node in graph.node:
        values = None
        if _candidate(node, graph_outputs):
            values = _shape_value(node, shapes)
            if values is None:
                values = _evaluate(model, node, consts, max_bytes, over_cap)
        if values is None:
            keep.append(node)
            continue
        for name, arr in values.items():
            consts[name] = numpy_helper.from_array(arr, name)
            new_inits.append(consts[name])
        feeds.update(i for i in node.input if i)
        folded[node.op_type] += 1
        n += 1
    if n:
        del graph.node[:]
        graph.node.extend(keep)
        graph.initializer.extend(new_inits)
    return n


def _candidate(node: Any, graph_outputs: set[str]) -> bool:
    from onnx import AttributeProto

    return (
        node.op_type in FOLDABLE
        and node.domain in ("", "ai.onnx")
        and not any(a.type in (AttributeProto.GRAPH, AttributeProto.GRAPHS) for a in node.attribute)
        and not any(o in graph_outputs for o in node.output)
    )


def _shape_value(node: Any, shapes: dict[str, tuple[int, ...]]) -> dict[str, np.ndarray] | None:
    """``Shape`` (with ``start``/``end``) or ``Size`` of a tensor with a static shape."""
    from onnx import helper

    if node.op_type not in ("Shape", "Size") or node.input[0] not in shapes:
        return None
    shape = shapes[node.input[0]]
    if node.op_type == "Size":
        return {node.output[0]: np.array(math.prod(shape), np.int64)}
    a = {x.name: helper.get_attribute_value(x) for x in node.attribute}
    end = a.get("end")
    return {
        node.output[0]: np.array(shape[int(a.get("start", 0)) : None if end is None else int(end)], np.int64)
    }


def _evaluate(model: Any, node: Any, consts: dict[str, Any], max_bytes: int,
              over_cap: set[str]) -> dict[str, np.ndarray] | None:  # fmt: skip
    """The node's outputs when every input is a constant and inputs and outputs fit ``max_bytes``."""
    ins = [i for i in node.input if i]
    if not ins or any(i not in consts for i in ins):
        return None
    if sum(_nbytes(consts[i]) for i in ins) > max_bytes:
        over_cap.add(node.name or node.output[0])
        return None
    single = _single_node_model(model, node, [consts[i] for i in ins])
    out_types = _output_types(single, node)
    if out_types is None:
        return None
    if sum(math.prod(s) * dt.itemsize for dt, s in out_types.values()) > max_bytes:
        over_cap.add(node.name or node.output[0])
        return None
    try:
        from onnx.reference import ReferenceEvaluator

        got = ReferenceEvaluator(single).run(None, {})
    except Exception:  # noqa: BLE001  (an op the reference evaluator cannot run stays in the graph)
        return None
    values = {}
    for name, arr in zip(out_types, got):
        dtype, shape = out_types[name]
        arr = np.asarray(arr)
        if arr.shape != shape:
            return None
        values[name] = arr.astype(dtype, copy=False)
    return values


def _nbytes(t: Any) -> int:
    from onnx import helper

    try:
        itemsize = np.dtype(helper.tensor_dtype_to_np_dtype(t.data_type)).itemsize
    except Exception:  # noqa: BLE001  (string or unknown element type: never folded)
        return 1 << 62
    return math.prod(int(d) for d in t.dims) * itemsize


def _single_node_model(model: Any, node: Any, inputs: list[Any]) -> Any:
    from onnx import helper

    outs = [helper.ValueInfoProto(name=o) for o in node.output if o]
    g = helper.make_graph([node], "fold", [], outs, inputs)
    return helper.make_model(g, opset_imports=list(model.opset_import), ir_version=model.ir_version)


def _output_types(single: Any, node: Any) -> dict[str, tuple[np.dtype, tuple[int, ...]]] | None:
    """Each output's (numpy dtype, static shape) from shape inference on the one-node model, else None."""
    import onnx
    from onnx import helper

    try:
        inferred = onnx.shape_inference.infer_shapes(single, strict_mode=True, data_prop=True)
    except Exception:  # noqa: BLE001  (an invalid node stays in the graph)
        return None
    found = {v.name: v.type.tensor_type for v in [*inferred.graph.value_info, *inferred.graph.output]}
    out = {}
    for name in (o for o in node.output if o):
        t = found.get(name)
        shape = None if t is None or not t.elem_type else _static(t)
        if shape is None:
            return None
        try:
            dtype = np.dtype(helper.tensor_dtype_to_np_dtype(t.elem_type))
        except Exception:  # noqa: BLE001
            return None
        if dtype.kind in "OSU":
            return None
        out[name] = (dtype, shape)
    return out


def _used_names(graph: Any) -> set[str]:
    """Every name a node reads (subgraphs included) and every graph output."""
    from onnx import AttributeProto

    used = {o.name for o in graph.output}
    for node in graph.node:
        used.update(node.input)
        for a in node.attribute:
            subs = [a.g] if a.type == AttributeProto.GRAPH else list(a.graphs)
            for sub in subs if a.type in (AttributeProto.GRAPH, AttributeProto.GRAPHS) else []:
                used |= _used_names(sub)
    return used


def _prune(graph: Any, feeds: set[str]) -> None:
    """Remove Constant nodes and initializers that only folded nodes read."""
    used = _used_names(graph)
    dead_nodes = [
        n for n in graph.node if n.op_type == "Constant" and n.output[0] in feeds and n.output[0] not in used
    ]
    inputs = {i.name for i in graph.input}
    dead_inits = [i for i in graph.initializer if i.name in feeds and i.name not in used | inputs]
    for n in dead_nodes:
        graph.node.remove(n)
    for i in dead_inits:
        graph.initializer.remove(i)
