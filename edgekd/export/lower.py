"""ONNX lowering passes: rewrite nodes the TFLite route turns into ops TFLite Micro cannot run.

Each pass is registered with :func:`lowering` and rewrites one ONNX op type into ops that convert to
TFLite builtins with int8 kernels in TFLite Micro:

* ``HardSigmoid`` -> ``Add``, ``Clip``, ``Mul`` (``relu6(x + 3) / 6`` for PyTorch's constants). The
  converter otherwise emits ``RELU_0_TO_1``, which TFLite Micro has no kernel for.
* ``Gather`` with constant int64 indices -> int32 indices (TFLite Micro's GATHER rejects int64 positions).
* ``Conv`` with trailing padding no window reads (stride 2, even input): that padding is dropped, so
  the PAD the converter puts before the conv is smaller (exact; see :func:`_conv_trailing_pads`).
* ``LSTM`` / ``GRU`` -> unrolled over the (static) sequence: one ``Gemm`` for the input projection of all
  steps, per step a ``Gemm`` on the hidden state, ``Sigmoid``/``Tanh``/``Mul``/``Add``, and the outputs
  concatenated in groups of at most :data:`MAX_CONCAT` (TFLite Micro's CONCATENATION takes at most 10
  inputs). onnx2tf cannot convert the recurrent nodes at all.

:func:`lower` runs every pass and returns the rewritten model and what was rewritten (for ``export.json``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from edgekd.errors import EdgekdError
from edgekd.export.fold import constant_tensors, static_shapes
from edgekd.graph.rewrites import MAX_CONCAT_INPUTS

MAX_CONCAT = MAX_CONCAT_INPUTS  # the same group size as the flatbuffer rewrite of the litert-torch route
Pass = Callable[["_Builder", Any], list[Any]]
LOWERINGS: dict[str, Pass] = {}


def lowering(op_type: str) -> Callable[[Pass], Pass]:
    """Register a rewrite for ONNX nodes of ``op_type``: ``fn(builder, node) -> replacement nodes``."""

    def deco(fn: Pass) -> Pass:
        LOWERINGS[op_type] = fn
        return fn

    return deco


class _Builder:
    """Adds nodes and constant initializers with unique names next to the node being replaced."""

    def __init__(self, model: Any, source: str) -> None:
        self.model = model
        self.source = source
        self.inits = {i.name: i for i in model.graph.initializer}
        self.node_consts = {k: v for k, v in constant_tensors(model.graph).items() if k not in self.inits}
        self.new_inits: list[Any] = []
        self.nodes: list[Any] = []
        self.shapes = static_shapes(model)
        self.n = 0

    def fresh(self, hint: str) -> str:
        self.n += 1
        return f"edgekd_lower_{hint}_{self.n}"

    def const(self, value: np.ndarray, hint: str = "c") -> str:
        from onnx import numpy_helper

        name = self.fresh(hint)
        self.new_inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def array(self, name: str) -> np.ndarray | None:
        from onnx import numpy_helper

        if not name:
            return None
        t = self.inits.get(name)
        return None if t is None else numpy_helper.to_array(t)

    def op(self, op_type: str, inputs: list[str], out: str | None = None, **attrs: Any) -> str:
        from onnx import helper

        out = out or self.fresh(op_type.lower())
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=out, **attrs))
        return out

    def split(self, x: str, parts: int, size: int) -> list[str]:
        """``Split`` of the last axis into ``parts`` pieces of ``size`` (opset 13+: sizes as an input)."""
        from onnx import helper

        outs = [self.fresh("part") for _ in range(parts)]
        sizes = self.const(np.full(parts, size, np.int64), "sizes")
        self.nodes.append(helper.make_node("Split", [x, sizes], outs, name=outs[0] + "_split", axis=-1))
        return outs

    def fail(self, node: Any, why: str) -> EdgekdError:
        return EdgekdError(f"{self.source}: ONNX {node.op_type} node '{node.name}': {why}")


def _attrs(node: Any) -> dict[str, Any]:
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


@lowering("HardSigmoid")
def _hard_sigmoid(b: _Builder, node: Any) -> list[Any]:
    a = _attrs(node)
    alpha, beta = float(a.get("alpha", 0.2)), float(a.get("beta", 0.5))
    if alpha <= 0:
        raise b.fail(node, f"alpha {alpha} <= 0 is not supported")
    shifted = b.op("Add", [node.input[0], b.const(np.float32(beta / alpha), "shift")])
    lo, hi = b.const(np.float32(0.0), "lo"), b.const(np.float32(1.0 / alpha), "hi")
    clipped = b.op("Clip", [shifted, lo, hi])
    b.op("Mul", [clipped, b.const(np.float32(alpha), "alpha")], out=node.output[0])
    return b.nodes


@lowering("Gather")
def _gather_int32_indices(b: _Builder, node: Any) -> list[Any]:
    """Constant int64 indices -> an int32 initializer (exact): TFLite Micro's GATHER takes int32 positions.

    onnx2tf keeps a Constant node's int64 indices (the TorchScript exporter's ``x[:, -1]``); a scalar int64
    initializer (the dynamo exporter's) already becomes an int32 constant and is left as it is.
    """
    from onnx import helper, numpy_helper

    name = node.input[1] if len(node.input) > 1 else ""
    t = b.node_consts.get(name, b.inits.get(name))
    idx = None if t is None else numpy_helper.to_array(t)
    if idx is None or idx.dtype != np.int64 or (name in b.inits and idx.ndim == 0):
        return [node]
    if idx.size > 1 << 16 or np.any(np.abs(idx) >= 2**31):
        return [node]
    ins = [node.input[0], b.const(idx.astype(np.int32), "idx")]
    return [helper.make_node("Gather", ins, list(node.output), name=node.name, **_attrs(node))]


@lowering("Conv")
def _conv_trailing_pads(b: _Builder, node: Any) -> list[Any]:
    """Drop trailing padding a strided Conv never reads (exact: the output is unchanged).

    PyTorch pads symmetrically; with stride 2 and an even input the last padded row/column is never
    under a window, but the converter still materialises it in a PAD op before the (depthwise) conv, and
    that padded tensor sets the arena peak of small CNNs. Trimming it shrinks the PAD output.
    """
    from onnx import helper

    a = _attrs(node)
    pads = list(a.get("pads", []))
    shape = b.shapes.get(node.input[0])
    w = b.array(node.input[1])
    if not pads or a.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET") or shape is None or w is None:
        return [node]
    nd = len(shape) - 2
    strides = list(a.get("strides", [1] * nd))
    dil = list(a.get("dilations", [1] * nd))
    kernel = list(a.get("kernel_shape", w.shape[2:]))
    new = list(pads)
    for i in range(nd):
        eff = (kernel[i] - 1) * dil[i] + 1
        padded = shape[2 + i] + pads[i] + pads[nd + i]
        out = (padded - eff) // strides[i] + 1
        unused = padded - ((out - 1) * strides[i] + eff)
        new[nd + i] = pads[nd + i] - min(pads[nd + i], unused)
    if new == pads:
        return [node]
    attrs = {k: v for k, v in a.items() if k != "pads"}
    return [helper.make_node("Conv", list(node.input), list(node.output), name=node.name, pads=new, **attrs)]


def _recurrent_common(b: _Builder, node: Any, gates: int) -> dict[str, Any]:
    a = _attrs(node)
    direction = a.get("direction", b"forward")
    direction = direction.decode() if isinstance(direction, bytes) else str(direction)
    for key in ("activations", "clip", "activation_alpha", "activation_beta"):
        if key in a:
            raise b.fail(
                node, f"attribute '{key}' is not supported by the unrolling (default activations only)"
            )
    if a.get("input_forget", 0):
        raise b.fail(node, "input_forget=1 is not supported")
    ins = list(node.input) + [""] * (8 - len(node.input))
    w, r = b.array(ins[1]), b.array(ins[2])
    if w is None or r is None:
        raise b.fail(node, "weights W and R must be constant initializers")
    hidden = int(a.get("hidden_size", r.shape[-1]))
    bias = b.array(ins[3])
    if bias is None:
        if ins[3]:
            raise b.fail(node, "bias B must be a constant initializer")
        bias = np.zeros((w.shape[0], 2 * gates * hidden), np.float32)
    if ins[4]:
        lens = b.array(ins[4])
        x_shape = b.shapes.get(ins[0])
        seq = x_shape[1 if a.get("layout", 0) else 0] if x_shape else None
        if lens is None or seq is None or not np.all(lens == seq):
            raise b.fail(node, "sequence_lens must be constant and equal to the sequence length")
    x_shape = b.shapes.get(ins[0])
    if x_shape is None or len(x_shape) != 3:
        raise b.fail(node, "the input needs a static 3-D shape (export with a fixed sequence length)")
    layout = int(a.get("layout", 0))
    seq, batch = (x_shape[1], x_shape[0]) if layout else (x_shape[0], x_shape[1])
    x = ins[0] if not layout else b.op("Transpose", [ins[0]], perm=[1, 0, 2])  # -> [seq, batch, in]
    return {"direction": direction, "w": w, "r": r, "bias": bias, "hidden": hidden, "seq": seq, "batch": batch,
            "x": x, "layout": layout, "ins": ins, "attrs": a}  # fmt: skip


def _initial(b: _Builder, name: str, d: int) -> str | None:
    """Initial state of direction ``d`` as a [batch, H] tensor name, or None when it is absent or all zero."""
    if not name:
        return None
    arr = b.array(name)
    if arr is not None:
        return None if not np.any(arr) else b.const(arr[d].astype(np.float32), "h0")
    return b.op("Gather", [name, b.const(np.int64(d), "dir")], axis=0)


def _input_projection(b: _Builder, c: dict[str, Any], d: int, bias: np.ndarray) -> list[str]:
    """``X W^T + bias`` for all steps in one Gemm, sliced into per-step ``[batch, G*H]`` tensors."""
    seq, batch = c["seq"], c["batch"]
    flat = b.op("Reshape", [c["x"], b.const(np.array([seq * batch, -1], np.int64), "shape")])
    proj = b.op("Gemm", [flat, b.const(c["w"][d].T.astype(np.float32).copy(), "w"), b.const(bias, "b")])
    steps = []
    for t in range(seq):
        s = b.op("Slice", [proj, b.const(np.array([t * batch], np.int64), "st"),
                           b.const(np.array([(t + 1) * batch], np.int64), "en"), b.const(np.array([0], np.int64), "ax")])  # fmt: skip
        steps.append(s)
    return steps


def _concat(b: _Builder, parts: list[str], axis: int) -> str:
    """Concatenate in groups of at most :data:`MAX_CONCAT` inputs (TFLite Micro's limit is 10)."""
    while len(parts) > 1:
        parts = [
            b.op("Concat", parts[i : i + MAX_CONCAT], axis=axis)
            if len(parts[i : i + MAX_CONCAT]) > 1
            else parts[i]
            for i in range(0, len(parts), MAX_CONCAT)
        ]
    return parts[0]


def _outputs(
    b: _Builder, node: Any, c: dict[str, Any], per_dir: list[list[str]], finals: list[list[str]]
) -> None:
    """Write Y ([seq, dirs, batch, H], or [batch, seq, dirs, H] with layout 1) and the final states."""
    outs = list(node.output) + [""] * 3
    if outs[0]:
        steps = []
        for t in range(c["seq"]):
            ds = [b.op("Unsqueeze", [hs[t], b.const(np.array([0, 1], np.int64), "ax")]) for hs in per_dir]
            steps.append(ds[0] if len(ds) == 1 else b.op("Concat", ds, axis=1))  # [1, dirs, batch, H]
        y = _concat(b, steps, axis=0)
        if c["layout"]:
            y = b.op("Transpose", [y], perm=[2, 0, 1, 3])
        b.op("Identity", [y], out=outs[0])
    for k, states in enumerate(finals, start=1):
        if outs[k]:
            ds = [b.op("Unsqueeze", [s, b.const(np.array([0], np.int64), "ax")]) for s in states]
            y = ds[0] if len(ds) == 1 else b.op("Concat", ds, axis=0)
            if c["layout"]:
                y = b.op("Transpose", [y], perm=[1, 0, 2])
            b.op("Identity", [y], out=outs[k])


def _directions(c: dict[str, Any]) -> list[bool]:
    return {"forward": [False], "reverse": [True], "bidirectional": [False, True]}[c["direction"]]


@lowering("LSTM")
def _lstm(b: _Builder, node: Any) -> list[Any]:
    c = _recurrent_common(b, node, 4)
    if c["ins"][7] and b.array(c["ins"][7]) is not None and np.any(b.array(c["ins"][7])):
        raise b.fail(node, "peephole weights P are not supported")
    hsz = c["hidden"]
    per_dir, finals_h, finals_c = [], [], []
    for d, reverse in enumerate(_directions(c)):
        wb, rb = c["bias"][d][: 4 * hsz], c["bias"][d][4 * hsz :]
        xs = _input_projection(b, c, d, (wb + rb).astype(np.float32))
        h = _initial(b, c["ins"][5], d)
        cell = _initial(b, c["ins"][6], d)
        rt = b.const(c["r"][d].T.astype(np.float32).copy(), "r")
        hs: list[str] = [""] * c["seq"]
        order = range(c["seq"] - 1, -1, -1) if reverse else range(c["seq"])
        for t in order:
            g = xs[t] if h is None else b.op("Add", [xs[t], b.op("MatMul", [h, rt])])
            parts = b.split(g, 4, hsz)
            i, o, f = (b.op("Sigmoid", [p]) for p in parts[:3])
            cand = b.op("Tanh", [parts[3]])
            ic = b.op("Mul", [i, cand])
            cell = ic if cell is None else b.op("Add", [b.op("Mul", [f, cell]), ic])
            h = b.op("Mul", [o, b.op("Tanh", [cell])])
            hs[t] = h
        per_dir.append(hs)
        finals_h.append(h)
        finals_c.append(cell)
    _outputs(b, node, c, per_dir, [finals_h, finals_c])
    return b.nodes


@lowering("GRU")
def _gru(b: _Builder, node: Any) -> list[Any]:
    c = _recurrent_common(b, node, 3)
    hsz = c["hidden"]
    lbr = int(c["attrs"].get("linear_before_reset", 0))
    per_dir, finals = [], []
    for d, reverse in enumerate(_directions(c)):
        wb, rb = c["bias"][d][: 3 * hsz], c["bias"][d][3 * hsz :]
        x_bias = wb.copy()
        x_bias[: 2 * hsz] += rb[: 2 * hsz]  # z, r: both biases on the input side
        if not lbr:
            x_bias[2 * hsz :] += rb[2 * hsz :]
        xs = _input_projection(b, c, d, x_bias.astype(np.float32))
        r_all = c["r"][d]
        rzr = b.const(r_all[: 2 * hsz].T.astype(np.float32).copy(), "rzr")
        rh = r_all[2 * hsz :].T.astype(np.float32).copy()
        rh_c = b.const(rh, "rh")
        rbh = rb[2 * hsz :].astype(np.float32)
        h = _initial(b, c["ins"][5], d)
        hs: list[str] = [""] * c["seq"]
        order = range(c["seq"] - 1, -1, -1) if reverse else range(c["seq"])
        for t in order:
            xz, xr, xh = b.split(xs[t], 3, hsz)
            if h is None:
                z, r = b.op("Sigmoid", [xz]), b.op("Sigmoid", [xr])
                rec_h = b.op("Mul", [r, b.const(rbh, "rbh")]) if lbr and np.any(rbh) else None
            else:
                hzr = b.op("MatMul", [h, rzr])
                pz, pr = b.split(hzr, 2, hsz)
                z, r = b.op("Sigmoid", [b.op("Add", [xz, pz])]), b.op("Sigmoid", [b.op("Add", [xr, pr])])
                if lbr:
                    rec_h = b.op("Mul", [r, b.op("Gemm", [h, rh_c, b.const(rbh, "rbh")])])
                else:
                    rec_h = b.op("MatMul", [b.op("Mul", [r, h]), rh_c])
            n = b.op("Tanh", [xh if rec_h is None else b.op("Add", [xh, rec_h])])
            if h is None:  # H = (1 - z) * n
                h = b.op("Sub", [n, b.op("Mul", [z, n])])
            else:  # H = n + z * (H_prev - n)
                h = b.op("Add", [n, b.op("Mul", [z, b.op("Sub", [h, n])])])
            hs[t] = h
        per_dir.append(hs)
        finals.append(h)
    _outputs(b, node, c, per_dir, [finals])
    return b.nodes


def lower(model: Any, source: str = "model.onnx") -> tuple[Any, list[dict[str, Any]]]:
    """Apply every registered lowering; returns ``(model, [{"node", "op", "into"}])`` (model rewritten in place)."""
    graph = model.graph
    if not any(n.op_type in LOWERINGS for n in graph.node):
        return model, []
    new_nodes: list[Any] = []
    done: list[dict[str, Any]] = []
    b = _Builder(model, source)
    for node in graph.node:
        fn = LOWERINGS.get(node.op_type)
        if fn is None:
            new_nodes.append(node)
            continue
        b.nodes = []
        repl = fn(b, node)
        new_nodes.extend(repl)
        if repl != [node]:
            done.append({"node": node.name, "op": node.op_type, "into": len(repl)})
    del graph.node[:]
    graph.node.extend(new_nodes)
    graph.initializer.extend(b.new_inits)
    return model, done
