"""Structural validation of a parsed ``.tflite`` before any runtime or planner sees it.

TFLite Micro, LiteRT and the C backend trust the file: a depthwise ``depth_multiplier`` that does not
match the tensors makes the kernel write past its output (SIGSEGV), an out-of-range tensor index reads
anywhere, a huge declared shape allocates terabytes, nested IF subgraphs make the planners run for
hours. :func:`validate_model` checks what a well-formed model always satisfies and raises one
EdgekdError line naming the file, the tensor or operator and what is wrong:

* indices: tensor buffers, operator inputs/outputs/intermediates, subgraph inputs/outputs, the
  subgraphs IF/WHILE/CALL_ONCE call (no recursion, bounded total expansion);
* tensors: known type, dimensions >= 0, bounded element count and bytes, constant data exactly the
  declared size, quantization scales finite and > 0 (integer types), zero points in range, per-channel
  parameters matching the quantized dimension;
* operators: input/output counts and, for the common kernels (convolutions, fully connected, pooling,
  element-wise, softmax, reshape, concatenation, pad, reductions), shapes and options consistent with
  each other (e.g. depthwise: output channels == input channels x depth_multiplier);
* totals: bytes of all run-time tensors under :data:`MAX_ACTIVATION_BYTES`.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from edgekd.errors import EdgekdError, error_line
from edgekd.graph.tflite_model import (
    SubGraph,
    Tensor,
    TFLiteModel,
    _schema_module,
    decode_everything,
)

MAX_ELEMENTS = 1 << 30  # per tensor (zero dimensions counted as 1)
MAX_TENSOR_BYTES = 1 << 30
MAX_ACTIVATION_BYTES = 1 << 30  # all tensors without constant data, every subgraph together
MAX_CONTROL_FLOW_VISITS = 100_000  # operator visits when IF/WHILE/CALL_ONCE subgraphs are expanded
_FIX = "the file is corrupt or hand-edited; re-export the model"
_INT_RANGES = {"int8": (-128, 127), "uint8": (0, 255), "int16": (-32768, 32767), "int4": (-8, 7)}
_NO_FIXED_SIZE = {"string", "resource", "variant"}
_VALID: dict[str, None] = {}  # content hashes of models that passed (validation is pure)


def _fail(m: TFLiteModel, what: str) -> EdgekdError:
    return EdgekdError(f"{m.source}: {what}; {_FIX}")


def _sg(sg: SubGraph) -> str:
    return f" in subgraph {sg.index}" if sg.index else ""


def _tname(sg: SubGraph, i: int) -> str:
    return f"tensor {i} ({sg.tensors[i].name!r}){_sg(sg)}"


def _numel(shape: Sequence[int]) -> int:
    return math.prod(int(d) for d in shape)


# ---- tensors ---------------------------------------------------------------------------------------


def _check_tensor(m: TFLiteModel, sg: SubGraph, t: Tensor) -> None:
    name = _tname(sg, t.index)
    n_buffers = len(m.buffer_sizes)
    if t.dtype.startswith("type"):
        raise _fail(m, f"{name} has unknown type code {t.dtype[4:]}")
    if not 0 <= t.buffer < max(n_buffers, 1):
        raise _fail(m, f"{name} uses buffer {t.buffer} but the model has {n_buffers}")
    if any(d < 0 for d in t.shape):
        raise _fail(m, f"{name} has a negative dimension in shape {list(t.shape)}")
    if math.prod(max(d, 1) for d in t.shape) > MAX_ELEMENTS or t.nbytes > MAX_TENSOR_BYTES:
        raise _fail(m, f"{name} declares shape {list(t.shape)} ({t.nbytes:,} bytes), over the "
                       f"{MAX_TENSOR_BYTES >> 20} MiB limit per tensor")  # fmt: skip
    if t.has_data and not t.sparse and t.dtype not in _NO_FIXED_SIZE:
        size = m.buffer_sizes[t.buffer]
        if size != t.nbytes and not (t.dtype == "int4" and size >= t.nbytes):
            raise _fail(m, f"{name} declares {t.nbytes:,} bytes ({t.dtype} {list(t.shape)}) but its "
                           f"buffer {t.buffer} holds {size:,}")  # fmt: skip
    _check_quantization(m, sg, t)


def _check_quantization(m: TFLiteModel, sg: SubGraph, t: Tensor) -> None:
    if not t.scale and not t.zero_point:
        return
    name = _tname(sg, t.index)
    integer = t.dtype in _INT_RANGES
    for s in t.scale:
        if not math.isfinite(s) or (integer and s <= 0) or s < 0:
            raise _fail(m, f"{name} has quantization scale {s!r} (must be finite and > 0)")
    if t.zero_point and len(t.zero_point) not in (1, len(t.scale)):
        raise _fail(m, f"{name} has {len(t.scale)} scales but {len(t.zero_point)} zero points")
    if integer:
        lo, hi = _INT_RANGES[t.dtype]
        bad = [z for z in t.zero_point if not lo <= z <= hi]
        if bad:
            raise _fail(m, f"{name} has zero point {bad[0]} outside the {t.dtype} range {lo}..{hi}")
    if len(t.scale) > 1:
        q = t.quantized_dimension
        if not 0 <= q < len(t.shape) or t.shape[q] != len(t.scale):
            raise _fail(m, f"{name} has {len(t.scale)} per-channel scales on dimension {q} of shape "
                           f"{list(t.shape)}")  # fmt: skip


def _check_index_list(m: TFLiteModel, sg: SubGraph, idx: Sequence[int], what: str, optional: bool) -> None:
    n = len(sg.tensors)
    for i in idx:
        if not (0 <= i < n or (optional and i == -1)):
            raise _fail(m, f"{what}{_sg(sg)} refers to tensor {i} but the subgraph has {n} tensors")


# ---- control flow ----------------------------------------------------------------------------------


def control_flow_visits(m: TFLiteModel, limit: int = MAX_CONTROL_FLOW_VISITS) -> int:
    """Operators a TFLM-style planner visits when every IF/WHILE/CALL_ONCE call from subgraph 0 is
    expanded (each call visits the whole called subgraph). Linear in the model (memoised per
    subgraph); raises EdgekdError for an out-of-range or recursive call, or a count over ``limit``."""
    sgs = m.subgraphs
    if not sgs:
        return len(m.operators)

    def calls(k: int) -> Iterator[tuple[Any, int]]:
        return ((op, c) for op in sgs[k].operators for c in op.subgraph_calls)

    visits: dict[int, int] = {}
    running = {0}
    stack = [(0, calls(0))]
    while stack:
        k, pending = stack[-1]
        for op, c in pending:
            if not 0 <= c < len(sgs):
                raise _fail(m, f"operator {op.index} ({op.opcode}){_sg(sgs[k])} calls subgraph {c} but the "
                               f"model has {len(sgs)}")  # fmt: skip
            if c in running:
                raise _fail(m, f"operator {op.index} ({op.opcode}){_sg(sgs[k])} calls subgraph {c}, which is "
                               "running already (recursive control flow never ends)")  # fmt: skip
            if c not in visits:
                running.add(c)
                stack.append((c, calls(c)))
                break
        else:
            stack.pop()
            running.discard(k)
            ops = sgs[k].operators
            visits[k] = min(limit + 1, len(ops) + sum(visits[c] for op in ops for c in op.subgraph_calls))
    if visits[0] > limit:
        raise EdgekdError(
            f"{m.source}: nested IF/WHILE/CALL_ONCE subgraphs expand to more than {limit:,} operator visits; "
            "TFLite Micro plans every visit (it would run for hours), so edgekd refuses it; flatten the "
            "control flow or re-export the model"
        )
    return visits[0]


# ---- operators -------------------------------------------------------------------------------------

# op name -> (leading inputs that must be present, leading outputs that must be present); other ops:
# only their index ranges are checked
_ARITY: dict[str, tuple[int, int]] = {
    "CONV_2D": (2, 1), "DEPTHWISE_CONV_2D": (2, 1), "FULLY_CONNECTED": (2, 1), "TRANSPOSE_CONV": (3, 1),
    "AVERAGE_POOL_2D": (1, 1), "MAX_POOL_2D": (1, 1), "L2_POOL_2D": (1, 1),
    "ADD": (2, 1), "SUB": (2, 1), "MUL": (2, 1), "DIV": (2, 1), "SQUARED_DIFFERENCE": (2, 1),
    "MAXIMUM": (2, 1), "MINIMUM": (2, 1), "PRELU": (2, 1),
    "SOFTMAX": (1, 1), "LOG_SOFTMAX": (1, 1), "RESHAPE": (1, 1), "SQUEEZE": (1, 1), "EXPAND_DIMS": (2, 1),
    "CONCATENATION": (1, 1), "PAD": (2, 1), "PADV2": (3, 1), "MEAN": (2, 1), "SUM": (2, 1),
    "REDUCE_MAX": (2, 1), "REDUCE_MIN": (2, 1), "REDUCE_PROD": (2, 1), "TRANSPOSE": (2, 1),
    "STRIDED_SLICE": (4, 1), "GATHER": (2, 1), "SPLIT": (2, 1), "SPLIT_V": (3, 1), "ARG_MAX": (2, 1),
    "ARG_MIN": (2, 1), "BATCH_MATMUL": (2, 1), "RESIZE_BILINEAR": (2, 1), "RESIZE_NEAREST_NEIGHBOR": (2, 1),
    "UNIDIRECTIONAL_SEQUENCE_LSTM": (1, 1), "IF": (1, 0), "WHILE": (0, 0), "CALL_ONCE": (0, 0),
    "ASSIGN_VARIABLE": (2, 0), "READ_VARIABLE": (1, 1), "VAR_HANDLE": (0, 1),
}  # fmt: skip
_ELEMENTWISE = {
    "RELU", "RELU6", "RELU_N1_TO_1", "RELU_0_TO_1", "LOGISTIC", "TANH", "QUANTIZE", "DEQUANTIZE",
    "HARD_SWISH", "LEAKY_RELU", "ABS", "NEG", "EXP", "LOG", "SQRT", "RSQRT", "SQUARE", "ELU", "CAST",
    "FLOOR", "CEIL", "ROUND", "SIN", "COS", "LOGICAL_NOT", "GELU",
}  # fmt: skip
_BROADCAST = {"ADD", "SUB", "MUL", "DIV", "SQUARED_DIFFERENCE", "MAXIMUM", "MINIMUM"}
_RESHAPES = {"RESHAPE", "SQUEEZE", "EXPAND_DIMS"}
_REDUCTIONS = {"MEAN", "SUM", "REDUCE_MAX", "REDUCE_MIN", "REDUCE_PROD"}
_OPTIONS = {
    "CONV_2D": "Conv2DOptions", "DEPTHWISE_CONV_2D": "DepthwiseConv2DOptions",
    "AVERAGE_POOL_2D": "Pool2DOptions", "MAX_POOL_2D": "Pool2DOptions", "L2_POOL_2D": "Pool2DOptions",
    "FULLY_CONNECTED": "FullyConnectedOptions", "CONCATENATION": "ConcatenationOptions",
    "TRANSPOSE_CONV": "TransposeConvOptions",
}  # fmt: skip
_REQUIRES_OPTIONS = {"CONV_2D", "DEPTHWISE_CONV_2D", "AVERAGE_POOL_2D", "MAX_POOL_2D", "L2_POOL_2D"}
_BIAS_TYPES = {"int8": ("int32",), "int16": ("int64", "int32"), "float32": ("float32",)}


class _Op:
    """One operator with its subgraph, for the checks below."""

    def __init__(self, m: TFLiteModel, sg: SubGraph, op: Any, root: Any) -> None:
        self.m, self.sg, self.op, self._root = m, sg, op, root
        self.label = f"operator {op.index} ({op.name}){_sg(sg)}"

    def fail(self, what: str) -> EdgekdError:
        return _fail(self.m, f"{self.label}: {what}")

    def t(self, pos: int, outputs: bool = False) -> Tensor | None:
        idx = self.op.outputs if outputs else self.op.inputs
        return self.sg.tensors[idx[pos]] if pos < len(idx) and idx[pos] >= 0 else None

    def need(self, pos: int, outputs: bool = False) -> Tensor:
        t = self.t(pos, outputs)
        if t is None:
            raise self.fail(f"{'output' if outputs else 'input'} {pos} is missing")
        return t

    def rank(self, t: Tensor, r: int, what: str) -> None:
        if len(t.shape) != r:
            raise self.fail(f"{what} has shape {list(t.shape)}, expected {r} dimensions")

    def options(self) -> Any | None:
        """The op's builtin options table as its schema class (None when absent); checks its type."""
        cls_name = _OPTIONS.get(self.op.opcode)
        if cls_name is None:
            return None
        s = _schema_module()
        o = self._root.Subgraphs(self.sg.index).Operators(self.op.index)
        kind, table = o.BuiltinOptionsType(), o.BuiltinOptions()
        if table is None or kind == s.BuiltinOptions.NONE:
            if self.op.opcode in _REQUIRES_OPTIONS:
                raise self.fail(f"has no {cls_name}")
            return None
        if kind != getattr(s.BuiltinOptions, cls_name):
            raise self.fail(f"has options of type {kind}, expected {cls_name}")
        opt = getattr(s, cls_name)()
        opt.Init(table.Bytes, table.Pos)
        return opt

    def quantized(self, *tensors: Tensor | None) -> None:
        """Integer activations of quantized kernels need a scale (TFLM reads it unchecked)."""
        for t in tensors:
            if t is not None and t.dtype in ("int8", "int16", "uint8") and not t.scale:
                raise self.fail(f"{t.dtype} tensor {t.index} ({t.name!r}) has no quantization scale")


def _check_operator(o: _Op) -> None:
    op = o.op
    _check_index_list(o.m, o.sg, op.inputs, o.label + " input", True)
    _check_index_list(o.m, o.sg, op.outputs, o.label + " output", True)
    _check_index_list(o.m, o.sg, op.intermediates, o.label + " intermediate", True)
    for i in op.outputs:
        if i >= 0 and o.sg.tensors[i].has_data and not o.sg.tensors[i].is_variable:
            raise o.fail(f"writes tensor {i} ({o.sg.tensors[i].name!r}), which holds constant data")
    n_in, n_out = _ARITY.get(op.opcode, (0, 0))
    for k in range(n_in):
        o.need(k)
    for k in range(n_out):
        o.need(k, outputs=True)
    check = _CHECKS.get(op.opcode)
    if check is None and op.opcode in _ELEMENTWISE:
        check = _same_size
    if check is None and op.opcode in _BROADCAST:
        check = _broadcast
    if check is not None:
        check(o)


def _conv_common(o: _Op, opt: Any, inp: Tensor, flt: Tensor, out: Tensor) -> None:
    if opt.StrideH() < 1 or opt.StrideW() < 1:
        raise o.fail(f"stride {opt.StrideH()}x{opt.StrideW()} (must be >= 1)")
    if opt.DilationHFactor() < 1 or opt.DilationWFactor() < 1:
        raise o.fail(f"dilation {opt.DilationHFactor()}x{opt.DilationWFactor()} (must be >= 1)")
    _spatial(o, opt.Padding(), inp, out, (flt.shape[1], flt.shape[2]), (opt.StrideH(), opt.StrideW()),
             (opt.DilationHFactor(), opt.DilationWFactor()))  # fmt: skip


def _spatial(o: _Op, padding: int, inp: Tensor, out: Tensor, window: tuple[int, int],
             stride: tuple[int, int], dilation: tuple[int, int] = (1, 1)) -> None:  # fmt: skip
    """Output height/width as TFLite computes them (``ComputeOutSize``): SAME ceil(in / stride),
    VALID ceil((in - dilated window + 1) / stride)."""
    if padding not in (0, 1):
        raise o.fail(f"padding {padding} is neither SAME (0) nor VALID (1)")
    want = []
    for k in (1, 2):
        size, st = inp.shape[k], stride[k - 1]
        eff = (window[k - 1] - 1) * dilation[k - 1] + 1
        want.append((size + st - 1) // st if padding == 0 else max((size + st - eff) // st, 0))
    if list(out.shape[1:3]) != want:
        raise o.fail(f"output {list(out.shape)} should be {want[0]}x{want[1]} for input {list(inp.shape)}, "
                     f"window {window[0]}x{window[1]}, stride {stride[0]}x{stride[1]} and "
                     f"{'SAME' if padding == 0 else 'VALID'} padding")  # fmt: skip


def _bias(o: _Op, inp: Tensor, channels: int, pos: int = 2) -> None:
    bias = o.t(pos)
    if bias is None:
        return
    if _numel(bias.shape) != channels:
        raise o.fail(
            f"bias tensor {bias.index} has {_numel(bias.shape)} values for {channels} output channels"
        )
    allowed = _BIAS_TYPES.get(inp.dtype)
    if allowed and bias.dtype not in allowed:
        raise o.fail(
            f"bias tensor {bias.index} is {bias.dtype}; {inp.dtype} inputs need {' or '.join(allowed)}"
        )


def _channel_scales(o: _Op, flt: Tensor, channels: int) -> None:
    if len(flt.scale) > 1 and len(flt.scale) != channels:
        raise o.fail(f"filter has {len(flt.scale)} per-channel scales for {channels} output channels")


def _conv(o: _Op) -> None:
    inp, flt, out = o.need(0), o.need(1), o.need(0, True)
    for t, what in ((inp, "input"), (flt, "filter"), (out, "output")):
        o.rank(t, 4, what)
    opt = o.options()
    _conv_common(o, opt, inp, flt, out)
    oc, ic, fc = out.shape[3], inp.shape[3], flt.shape[3]
    if flt.shape[0] != oc:
        raise o.fail(
            f"filter {list(flt.shape)} has {flt.shape[0]} output channels, the output {list(out.shape)} {oc}"
        )
    if fc < 1 or ic % fc:
        raise o.fail(f"input has {ic} channels, not a multiple of the filter depth {fc}")
    if inp.shape[0] != out.shape[0]:
        raise o.fail(f"input batch {inp.shape[0]} differs from output batch {out.shape[0]}")
    _channel_scales(o, flt, oc)
    _bias(o, inp, oc)
    o.quantized(inp, flt, out)


def _depthwise(o: _Op) -> None:
    inp, flt, out = o.need(0), o.need(1), o.need(0, True)
    for t, what in ((inp, "input"), (flt, "filter"), (out, "output")):
        o.rank(t, 4, what)
    opt = o.options()
    _conv_common(o, opt, inp, flt, out)
    dm, ic, oc = opt.DepthMultiplier(), inp.shape[3], out.shape[3]
    if flt.shape[0] != 1 or flt.shape[3] != oc:
        raise o.fail(f"filter shape {list(flt.shape)} does not match the output's {oc} channels")
    if dm < 1 or oc != ic * dm:
        raise o.fail(f"depth_multiplier {dm} with {ic} input channels gives {ic * dm} output channels, "
                     f"but the output has {oc}")  # fmt: skip
    if inp.shape[0] != out.shape[0]:
        raise o.fail(f"input batch {inp.shape[0]} differs from output batch {out.shape[0]}")
    _channel_scales(o, flt, oc)
    _bias(o, inp, oc)
    o.quantized(inp, flt, out)


def _fully_connected(o: _Op) -> None:
    inp, flt, out = o.need(0), o.need(1), o.need(0, True)
    opt = o.options()
    if opt is not None and opt.WeightsFormat() != 0:
        return  # shuffled weight layouts have another shape
    o.rank(flt, 2, "weights")
    units, depth = flt.shape
    n_in = _numel(inp.shape)
    if depth < 1 or n_in % depth:
        raise o.fail(f"input {list(inp.shape)} ({n_in} values) is not a whole number of rows of {depth} "
                     f"(weights {list(flt.shape)})")  # fmt: skip
    if _numel(out.shape) != n_in // depth * units:
        raise o.fail(f"output {list(out.shape)} does not hold {n_in // depth} rows of {units} "
                     f"(input {list(inp.shape)}, weights {list(flt.shape)})")  # fmt: skip
    _channel_scales(o, flt, units)
    _bias(o, inp, units)
    o.quantized(inp, flt, out)


def _transpose_conv(o: _Op) -> None:
    flt, inp, out = o.need(1), o.need(2), o.need(0, True)
    for t, what in ((inp, "input"), (flt, "filter"), (out, "output")):
        o.rank(t, 4, what)
    opt = o.options()
    if opt is not None and (opt.StrideH() < 1 or opt.StrideW() < 1):
        raise o.fail(f"stride {opt.StrideH()}x{opt.StrideW()} (must be >= 1)")
    if flt.shape[0] != out.shape[3] or flt.shape[3] != inp.shape[3]:
        raise o.fail(
            f"filter {list(flt.shape)} does not match input {list(inp.shape)} and output {list(out.shape)}"
        )
    _channel_scales(o, flt, out.shape[3])
    _bias(o, inp, out.shape[3], pos=3)
    o.quantized(inp, flt, out)


def _pool(o: _Op) -> None:
    inp, out = o.need(0), o.need(0, True)
    o.rank(inp, 4, "input")
    o.rank(out, 4, "output")
    opt = o.options()
    if opt.FilterHeight() < 1 or opt.FilterWidth() < 1 or opt.StrideH() < 1 or opt.StrideW() < 1:
        raise o.fail(f"filter {opt.FilterHeight()}x{opt.FilterWidth()}, stride {opt.StrideH()}x{opt.StrideW()} "
                     "(all must be >= 1)")  # fmt: skip
    if inp.shape[0] != out.shape[0] or inp.shape[3] != out.shape[3]:
        raise o.fail(f"input {list(inp.shape)} and output {list(out.shape)} differ in batch or channels")
    _spatial(
        o, opt.Padding(), inp, out, (opt.FilterHeight(), opt.FilterWidth()), (opt.StrideH(), opt.StrideW())
    )
    o.quantized(inp, out)


def _same_size(o: _Op) -> None:
    inp, out = o.need(0), o.need(0, True)
    if _numel(inp.shape) != _numel(out.shape):
        raise o.fail(f"input {list(inp.shape)} and output {list(out.shape)} differ in size")


def _broadcast(o: _Op) -> None:
    a, b, out = o.need(0), o.need(1), o.need(0, True)
    ra, rb = list(a.shape), list(b.shape)
    n = max(len(ra), len(rb))
    ra, rb = [1] * (n - len(ra)) + ra, [1] * (n - len(rb)) + rb
    want = []
    for x, y in zip(ra, rb, strict=True):
        if x != y and 1 not in (x, y):
            raise o.fail(f"inputs {list(a.shape)} and {list(b.shape)} cannot be broadcast together")
        want.append(y if x == 1 else x)
    if _numel(out.shape) != _numel(want) or (len(out.shape) == len(want) and list(out.shape) != want):
        raise o.fail(f"output {list(out.shape)} is not the broadcast shape {want} of its inputs")
    o.quantized(a, b, out)


def _softmax(o: _Op) -> None:
    _same_size(o)
    inp = o.need(0)
    if not inp.shape or inp.shape[-1] < 1:
        raise o.fail(f"input {list(inp.shape)} has no classes")
    o.quantized(inp, o.need(0, True))


def _concatenation(o: _Op) -> None:
    out = o.need(0, True)
    ins = [o.need(k) for k in range(len(o.op.inputs))]
    opt = o.options()
    rank = len(out.shape)
    axis = opt.Axis() if opt is not None else 0
    axis = axis + rank if axis < 0 else axis
    if not 0 <= axis < max(rank, 1):
        raise o.fail(f"axis {opt.Axis() if opt else 0} is outside the output's {rank} dimensions")
    total = 0
    for t in ins:
        if len(t.shape) != rank or any(t.shape[d] != out.shape[d] for d in range(rank) if d != axis):
            raise o.fail(f"input {list(t.shape)} does not fit output {list(out.shape)} along axis {axis}")
        total += t.shape[axis] if rank else 1
    if rank and total != out.shape[axis]:
        raise o.fail(f"inputs add up to {total} along axis {axis}, the output has {out.shape[axis]}")


def _const_ints(o: _Op, t: Tensor) -> list[int] | None:
    """Values of a constant int32/int64 tensor (None when not constant)."""
    if not t.has_data or t.dtype not in ("int32", "int64"):
        return None
    raw = _buffer_bytes(o.m, t.buffer)
    size, code = (4, "i") if t.dtype == "int32" else (8, "q")
    fmt = f"<{len(raw) // size}{code}"
    return list(struct.unpack(fmt, raw[: struct.calcsize(fmt)]))


def _buffer_bytes(m: TFLiteModel, b: int) -> bytes:
    root = _schema_module().Model.GetRootAs(m.data, 0)
    buf = root.Buffers(b)
    if buf.DataLength():
        return buf.DataAsNumpy().tobytes()
    return m.data[buf.Offset() : buf.Offset() + buf.Size()]


def _pad(o: _Op) -> None:
    inp, pads, out = o.need(0), o.need(1), o.need(0, True)
    rank = len(inp.shape)
    if len(out.shape) != rank or list(pads.shape) != [rank, 2]:
        raise o.fail(
            f"paddings {list(pads.shape)} do not fit input {list(inp.shape)} / output {list(out.shape)}"
        )
    vals = _const_ints(o, pads)
    if vals is None:
        return
    for d in range(rank):
        before, after = vals[2 * d], vals[2 * d + 1]
        if before < 0 or after < 0 or inp.shape[d] + before + after != out.shape[d]:
            raise o.fail(f"paddings {vals} do not turn input {list(inp.shape)} into output {list(out.shape)}")


def _reduction(o: _Op) -> None:
    inp, axes = o.need(0), o.need(1)
    vals = _const_ints(o, axes)
    rank = len(inp.shape)
    if vals is not None and any(not -rank <= v < rank for v in vals):
        raise o.fail(f"axes {vals} are outside the input's {rank} dimensions")


def _reshape(o: _Op) -> None:
    inp, out = o.need(0), o.need(0, True)
    if _numel(inp.shape) != _numel(out.shape):
        raise o.fail(f"input {list(inp.shape)} and output {list(out.shape)} differ in size")


_CHECKS: dict[str, Callable[[_Op], None]] = {
    "CONV_2D": _conv, "DEPTHWISE_CONV_2D": _depthwise, "FULLY_CONNECTED": _fully_connected,
    "TRANSPOSE_CONV": _transpose_conv, "AVERAGE_POOL_2D": _pool, "MAX_POOL_2D": _pool, "L2_POOL_2D": _pool,
    "SOFTMAX": _softmax, "LOG_SOFTMAX": _softmax, "CONCATENATION": _concatenation, "PAD": _pad,
    "PADV2": _pad, **dict.fromkeys(_REDUCTIONS, _reduction), **dict.fromkeys(_RESHAPES, _reshape),
}  # fmt: skip


# ---- the model -------------------------------------------------------------------------------------


def validate_model(m: TFLiteModel) -> None:
    """Raise one EdgekdError line for the first structural problem of ``m`` (see the module doc).
    A model that passed once (same bytes) is not checked again."""
    import hashlib

    key = hashlib.sha1(m.data).hexdigest()
    if key in _VALID:
        return
    try:
        decode_everything(m.data)  # tables edgekd does not read itself must decode too (signatures, ...)
    except Exception as e:  # noqa: BLE001  (flatbuffers raises struct/index/type errors)
        raise _fail(m, f"a table does not decode ({error_line(e, 160)})") from None
    _validate(m)
    if len(_VALID) > 1024:
        _VALID.clear()
    _VALID[key] = None


def _validate(m: TFLiteModel) -> None:
    sgs = m.subgraphs
    activations = 0
    for sg in sgs:
        for t in sg.tensors:
            _check_tensor(m, sg, t)
            if not t.has_data:
                activations += t.nbytes
        _check_index_list(m, sg, sg.inputs, "the input list", False)
        _check_index_list(m, sg, sg.outputs, "the output list", False)
    if activations > MAX_ACTIVATION_BYTES:
        raise _fail(m, f"the tensors computed at run time declare {activations:,} bytes, over the "
                       f"{MAX_ACTIVATION_BYTES >> 20} MiB limit")  # fmt: skip
    control_flow_visits(m)
    root = _schema_module().Model.GetRootAs(m.data, 0)
    for sg in sgs:
        for op in sg.operators:
            o = _Op(m, sg, op, root)
            try:
                _check_operator(o)
            except EdgekdError:
                raise
            except Exception as e:  # noqa: BLE001  (unreadable options of a corrupt file)
                raise o.fail(f"unreadable parameters ({type(e).__name__})") from None


__all__ = [
    "MAX_ACTIVATION_BYTES",
    "MAX_CONTROL_FLOW_VISITS",
    "MAX_ELEMENTS",
    "MAX_TENSOR_BYTES",
    "control_flow_visits",
    "validate_model",
]
