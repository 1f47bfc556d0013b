"""MACs and parameters per layer.

* PyTorch: forward hooks on Conv1d/Conv2d/Linear count ``output elements x (in_channels / groups x
  kernel)`` and ``output elements x in_features`` for one sample.
* TFLite: CONV_2D, DEPTHWISE_CONV_2D and FULLY_CONNECTED from the graph's tensor shapes.
* ONNX: Conv, Gemm and MatMul after ONNX shape inference.

Every counter returns ``{"total": int, "params": int, "layers": [{name, type, macs, params}]}``.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def _result(layers: list[dict[str, Any]], params: int) -> dict[str, Any]:
    return {"total": int(sum(layer["macs"] for layer in layers)), "params": int(params), "layers": layers}


def torch_macs(model: Any, input_shape: Sequence[int]) -> dict[str, Any]:
    """MACs of one forward pass of a batch-1 input of shape ``input_shape`` (without batch)."""
    import torch
    from torch import nn

    layers: list[dict[str, Any]] = []
    hooks = []

    def hook(name: str):
        def fn(mod: nn.Module, inputs: Any, output: Any) -> None:
            out = output.detach()
            per_sample = out.numel() // max(1, out.shape[0])
            if isinstance(mod, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
                kernel = math.prod(mod.kernel_size) * (mod.in_channels // mod.groups)
                kind = "depthwise_conv" if mod.groups == mod.in_channels and mod.groups > 1 else "conv"
                macs = per_sample * kernel
            else:
                kind, macs = "linear", per_sample * mod.in_features
            params = sum(p.numel() for p in mod.parameters(recurse=False))
            layers.append({"name": name, "type": kind, "macs": int(macs), "params": int(params),
                           "output_shape": list(out.shape[1:])})  # fmt: skip

        return fn

    for name, mod in model.named_modules():
        if isinstance(mod, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)):
            hooks.append(mod.register_forward_hook(hook(name)))
    try:
        was_training = model.training
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, *input_shape))
        model.train(was_training)
    finally:
        for h in hooks:
            h.remove()
    return _result(layers, sum(p.numel() for p in model.parameters()))


def count_tflite_ops(ops: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """MACs of TFLite operators given as ``{"name", "type", "inputs": [shape], "outputs": [shape]}``
    (shapes are lists; ``inputs[1]`` is the weight tensor)."""
    layers = []
    for op in ops:
        kind, ins, outs = op["type"], op["inputs"], op["outputs"]
        if kind not in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED") or len(ins) < 2 or not outs:
            continue
        out_elems = math.prod(outs[0])
        w = ins[1]
        if kind == "CONV_2D":  # weights [Cout, kh, kw, Cin]
            macs = out_elems * math.prod(w[1:])
        elif kind == "DEPTHWISE_CONV_2D":  # weights [1, kh, kw, Cout]
            macs = out_elems * w[1] * w[2]
        else:  # weights [units, in_features]
            macs = out_elems * w[-1]
        params = math.prod(w) + (math.prod(ins[2]) if len(ins) > 2 and ins[2] else 0)
        layers.append({"name": op.get("name", kind), "type": kind, "macs": int(macs), "params": int(params),
                       "output_shape": list(outs[0])})  # fmt: skip
    return layers


def tflite_op_list(model_content: bytes) -> tuple[list[dict[str, Any]], int]:
    """Operators with tensor shapes, and the parameter count (elements of constant tensors), read
    with :func:`edgekd.graph.read_tflite` (or, without it, LiteRT's interpreter without delegates)."""
    try:
        from edgekd.graph import read_tflite
    except ImportError:
        return _litert_op_list(model_content)
    g = read_tflite(model_content)
    ops = []
    for op in g.operators:
        ins = [list(g.tensors[i].shape) if i >= 0 else [] for i in op.inputs]
        outs = [list(g.tensors[i].shape) for i in op.outputs if i >= 0]
        ops.append({"name": f"{op.index}:{op.name}", "type": op.name, "inputs": ins, "outputs": outs})
    params = sum(math.prod(t.shape) for t in g.tensors if t.is_constant and op_uses_as_weight(g, t.index))
    return ops, int(params)


def op_uses_as_weight(g: Any, tensor_index: int) -> bool:
    """True if a constant tensor is a weight or bias operand (not a shape/axis constant)."""
    return any(
        tensor_index in op.inputs[1:]
        and op.name not in ("RESHAPE", "TRANSPOSE", "PAD", "MEAN", "STRIDED_SLICE")
        for op in g.operators
    )


def _litert_op_list(model_content: bytes) -> tuple[list[dict[str, Any]], int]:
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    it = Interpreter(
        model_content=model_content,
        experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
        experimental_preserve_all_tensors=True,
    )
    tensors = {t["index"]: t for t in it.get_tensor_details()}
    ops = it._get_ops_details()  # noqa: SLF001  (the interpreter's public-in-practice op listing)
    produced = {int(o) for op in ops for o in op["outputs"]}
    graph_inputs = {d["index"] for d in it.get_input_details()}
    const = set()
    out = []
    for op in ops:
        ins = []
        for i in op["inputs"]:
            i = int(i)
            if i < 0:
                ins.append([])
                continue
            ins.append([int(s) for s in tensors[i]["shape"]])
            if i not in produced and i not in graph_inputs:
                const.add(i)
        outs = [[int(s) for s in tensors[int(o)]["shape"]] for o in op["outputs"]]
        name = tensors[int(op["outputs"][0])]["name"] if len(op["outputs"]) else op["op_name"]
        out.append({"name": f"{op['index']}:{op['op_name']}", "type": op["op_name"], "inputs": ins,
                    "outputs": outs, "tensor": name})  # fmt: skip
    params = int(sum(math.prod(tensors[i]["shape"]) for i in const))
    return out, params


def tflite_macs(model_content: bytes) -> dict[str, Any]:
    """MACs per conv / depthwise conv / fully connected operator of a ``.tflite`` model."""
    ops, params = tflite_op_list(model_content)
    return _result(count_tflite_ops(ops), params)


def onnx_macs(path: str | Path) -> dict[str, Any]:
    """MACs of Conv / Gemm / MatMul nodes of an ONNX model (after shape inference) and its parameter
    count (initializer elements; QDQ models count each quantized weight once)."""
    import onnx
    from onnx import shape_inference

    model = onnx.load(str(path))
    with contextlib.suppress(Exception):  # shape inference is best effort
        model = shape_inference.infer_shapes(model)
    g = model.graph
    shapes: dict[str, list[int]] = {}
    for vi in list(g.input) + list(g.value_info) + list(g.output):
        dims = vi.type.tensor_type.shape.dim
        shapes[vi.name] = [d.dim_value if d.dim_value > 0 else 1 for d in dims]
    inits = {i.name: i for i in g.initializer}
    for name, init in inits.items():
        shapes[name] = list(init.dims)
    # a DequantizeLinear of an initializer has the initializer's shape
    for node in g.node:
        if node.op_type == "DequantizeLinear" and node.input[0] in shapes:
            shapes.setdefault(node.output[0], shapes[node.input[0]])
    layers = []
    for i, node in enumerate(g.node):
        if node.op_type not in ("Conv", "Gemm", "MatMul") or not node.output:
            continue
        out = shapes.get(node.output[0])
        w = shapes.get(node.input[1]) if len(node.input) > 1 else None
        if not out or not w:
            continue
        out_elems = math.prod(out[1:]) if len(out) > 1 else math.prod(out)
        if node.op_type == "Conv":  # W: [Cout, Cin/groups, k...]
            macs = out_elems * math.prod(w[1:])
        elif node.op_type == "Gemm":
            trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
            macs = out_elems * (w[1] if trans_b else w[0])
        else:
            macs = out_elems * w[-2] if len(w) >= 2 else out_elems
        name = node.name or f"{i}:{node.op_type}"
        layers.append({"name": name, "type": node.op_type, "macs": int(macs), "params": int(math.prod(w)),
                       "output_shape": out[1:]})  # fmt: skip
    # parameters: initializers feeding Conv/Gemm/MatMul/Add (directly or through DequantizeLinear)
    dq_src = {n.output[0]: n.input[0] for n in g.node if n.op_type == "DequantizeLinear"}
    used: set[str] = set()
    for node in g.node:
        if node.op_type in ("Conv", "Gemm", "MatMul", "Add", "BatchNormalization"):
            for name in node.input[1:]:
                name = dq_src.get(name, name)
                if name in inits:
                    used.add(name)
    params = sum(math.prod(inits[n].dims) for n in used)
    return _result(layers, params)
