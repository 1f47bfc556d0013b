"""Per-tensor views and rewrites of a ``.tflite`` for int8 fidelity work (float-vs-int8 diff, calibration ranges).

* :func:`op_output_tensors`: every operator's first output tensor, in execution order (what a per-layer
  diff compares).
* :func:`iter_tensors`: run a model on LiteRT's reference kernels with every intermediate tensor kept
  (``experimental_preserve_all_tensors``) and hand each sample's dequantized op outputs to a callback.
* :func:`with_int8_layer`: the float model with one operator "switched to int8": its constant inputs
  replaced by the int8 model's dequantized weights and bias, and its output passed through a
  QUANTIZE -> DEQUANTIZE pair with the int8 model's scale and zero point (exact fake quantization in
  TFLite's own kernels).
* :func:`with_activation_ranges`: the int8 model with some activation tensors given new (scale, zero
  point) from float ranges. TFLite kernels derive their requantisation multipliers from tensor scales at
  Prepare time, so rewriting the scale is sufficient, except that the int32 bias of a convolution /
  fully connected layer is quantized with ``input_scale * weight_scale``: the biases of the consumers are
  re-quantized. Ops whose output must share the input's parameters (:data:`TIED_OPS`) pass the new
  parameters on; a tensor is re-ranged only when every op that reads it (or its tied copies) rescales.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import numpy as np

from edgekd.errors import EdgekdError
from edgekd.graph.quant import dequantize, quantize
from edgekd.graph.tflite_model import TFLiteModel, _schema_module

# output quantization must equal the input's (kernels copy or compare raw int8 values)
TIED_OPS = frozenset({"PAD", "PADV2", "RESHAPE", "SQUEEZE", "EXPAND_DIMS", "MAX_POOL_2D", "AVERAGE_POOL_2D",
                      "TRANSPOSE", "STRIDED_SLICE", "SLICE", "GATHER", "SPACE_TO_DEPTH", "DEPTH_TO_SPACE",
                      "RESIZE_NEAREST_NEIGHBOR", "SPLIT", "SPLIT_V", "UNPACK"})  # fmt: skip
# kernels that requantise from the tensor scales they are given (output params free to change)
RESCALING_OPS = frozenset({"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV", "ADD", "SUB",
                           "MUL", "MEAN", "SUM", "QUANTIZE", "DEQUANTIZE", "HARD_SWISH", "LEAKY_RELU", "RELU",
                           "RELU6", "PRELU", "BATCH_MATMUL"})  # fmt: skip
BIAS_OPS = frozenset({"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV"})
MAX_CAPTURE_BYTES = 64 << 20  # float bytes of all captured tensors of one sample


def op_output_tensors(model: TFLiteModel) -> list[tuple[int, int]]:
    """``(operator index, output tensor index)`` of every operator with a computed output."""
    out = []
    for op in model.operators:
        outs = [i for i in op.outputs if i >= 0 and not model.tensors[i].has_data]
        if outs:
            out.append((op.index, outs[0]))
    return out


def _check_capture_size(model: TFLiteModel, tensors: list[int]) -> None:
    elems = sum(int(np.prod(model.tensors[i].shape or (1,))) for i in tensors)
    if elems * 4 > MAX_CAPTURE_BYTES:
        raise EdgekdError(
            f"{model.source}: its activations take {elems * 4 / 2**20:.0f} MiB per sample "
            f"(> {MAX_CAPTURE_BYTES >> 20} MiB): too large for a per-tensor diff"
        )


def _interpreter(data: bytes) -> Any:
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    from edgekd.native_io import redirect_fds

    with redirect_fds(fds=(2,)):
        it = Interpreter(model_content=data, experimental_op_resolver_type=OpResolverType.BUILTIN_REF,
                         experimental_preserve_all_tensors=True)  # fmt: skip
        it.allocate_tensors()
    return it


def iter_tensors(
    model: TFLiteModel, x: np.ndarray, tensors: list[int]
) -> Iterator[tuple[list[np.ndarray], np.ndarray]]:
    """Run ``model`` on each row of ``x`` (float, in the model's input layout); yield
    ``([dequantized float32 value of each of tensors], dequantized output)`` per row."""
    _check_capture_size(model, tensors)
    it = _interpreter(model.data)
    inp, outp = it.get_input_details()[0], it.get_output_details()[0]
    details = {d["index"]: d for d in it.get_tensor_details()}
    for row in range(len(x)):
        it.set_tensor(inp["index"], _to_input(x[row : row + 1], inp))
        it.invoke()
        yield (
            [_dequant(it.get_tensor(i), details[i]) for i in tensors],
            _dequant(it.get_tensor(outp["index"]), outp),
        )


def run_model(data: bytes, x: np.ndarray) -> np.ndarray:
    """The dequantized outputs (N, ...) of a ``.tflite`` on LiteRT's reference kernels, one row at a time."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    from edgekd.native_io import redirect_fds

    with redirect_fds(fds=(2,)):
        it = Interpreter(model_content=data, experimental_op_resolver_type=OpResolverType.BUILTIN_REF)
        it.allocate_tensors()
    inp, outp = it.get_input_details()[0], it.get_output_details()[0]
    outs = []
    for row in range(len(x)):
        it.set_tensor(inp["index"], _to_input(x[row : row + 1], inp))
        it.invoke()
        outs.append(_dequant(it.get_tensor(outp["index"]), outp))
    return np.concatenate(outs)


def _qp(detail: dict[str, Any]) -> tuple[float, int]:
    scale, zp = detail.get("quantization", (0.0, 0))
    return float(scale), int(zp)


def _to_input(x: np.ndarray, detail: dict[str, Any]) -> np.ndarray:
    x = x.reshape(detail["shape"])
    scale, zp = _qp(detail)
    return (
        quantize(x, scale, zp, detail["dtype"])
        if np.dtype(detail["dtype"]).kind in "iu"
        else x.astype(np.float32)
    )


def _dequant(v: np.ndarray, detail: dict[str, Any]) -> np.ndarray:
    scale, zp = _qp(detail)
    return dequantize(v, scale, zp) if v.dtype.kind in "iu" and scale else v.astype(np.float32)


# --------------------------------------------------------------------------------------------------
# flatbuffer rewrites


def _unpack(data: bytes, source: str) -> tuple[Any, Any]:
    s = _schema_module()
    mt = s.ModelT.InitFromPackedBuf(bytearray(data), 0)
    if any((b.offset or 0) > 1 for b in mt.buffers or []):
        raise EdgekdError(f"{source}: buffers stored outside the flatbuffer are not supported here")
    return s, mt


def _pack(mt: Any, size_hint: int) -> bytes:
    import flatbuffers

    b = flatbuffers.Builder(size_hint + 4096)
    b.Finish(mt.Pack(b), file_identifier=b"TFL3")
    return bytes(b.Output())


def _opcode_index(s: Any, mt: Any, builtin: int) -> int:
    for i, code in enumerate(mt.operatorCodes or []):
        if max(int(code.builtinCode or 0), int(code.deprecatedBuiltinCode or 0)) == builtin:
            return i
    code = s.OperatorCodeT()
    code.builtinCode, code.deprecatedBuiltinCode, code.version = builtin, min(builtin, 127), 1
    mt.operatorCodes.append(code)
    return len(mt.operatorCodes) - 1


def _new_tensor(
    s: Any, mt: Any, g: Any, like: Any, name: str, dtype: int, qp: tuple[float, int] | None
) -> int:
    t = copy.deepcopy(like)
    t.name, t.type, t.quantization = name.encode(), dtype, None
    if qp is not None:
        q = s.QuantizationParametersT()
        q.scale, q.zeroPoint = [float(qp[0])], [int(qp[1])]
        t.quantization = q
    mt.buffers.append(s.BufferT())
    t.buffer = len(mt.buffers) - 1
    g.tensors.append(t)
    return len(g.tensors) - 1


def _set_const(s: Any, mt: Any, t: Any, values: np.ndarray) -> None:
    buf = s.BufferT()
    buf.data = np.frombuffer(np.ascontiguousarray(values).tobytes(), dtype=np.uint8)
    mt.buffers.append(buf)
    t.buffer = len(mt.buffers) - 1


def _dequant_const(t: Any, raw: np.ndarray) -> np.ndarray:
    """A quantized constant tensor's values in float32 (per-tensor or per-channel)."""
    scale = np.asarray(t.scale, np.float32)
    zp = np.asarray(t.zero_point if len(t.zero_point) else [0] * len(scale), np.float32)
    if len(scale) == 1:
        return ((raw.astype(np.float32) - zp[0]) * scale[0]).astype(np.float32)
    shape = [1] * raw.ndim
    shape[t.quantized_dimension] = len(scale)
    return ((raw.astype(np.float32) - zp.reshape(shape)) * scale.reshape(shape)).astype(np.float32)


def with_int8_layer(fp32: TFLiteModel, int8: TFLiteModel, op_index: int) -> bytes:
    """The float model with operator ``op_index`` switched to int8 (weights and output; see the module doc)."""
    s, mt = _unpack(fp32.data, fp32.source)
    g = mt.subgraphs[0]
    fop, qop = g.operators[op_index], int8.operators[op_index]
    for slot, (fi, qi) in enumerate(zip(fop.inputs, qop.inputs)):
        ft, qt = (fp32.tensors[fi] if fi >= 0 else None), (int8.tensors[qi] if qi >= 0 else None)
        if ft is None or qt is None or not (ft.has_data and qt.has_data and qt.is_quantized) or slot == 0:
            continue
        if ft.dtype != "float32" or ft.shape != qt.shape:
            continue
        raw = np.frombuffer(_buffer_bytes(int8, qt), dtype=qt.dtype).reshape(qt.shape)
        _set_const(s, mt, g.tensors[fi], _dequant_const(qt, raw))
    out = int(fop.outputs[0])
    qout = int8.tensors[int(qop.outputs[0])]
    if not qout.is_quantized:
        return _pack(mt, len(fp32.data))
    like = g.tensors[out]
    qidx = _new_tensor(
        s, mt, g, like, f"edgekd_q/{op_index}", s.TensorType.INT8, (qout.scale[0], qout.zero_point[0])
    )
    didx = _new_tensor(s, mt, g, like, f"edgekd_dq/{op_index}", s.TensorType.FLOAT32, None)
    for later in g.operators[op_index + 1 :]:
        later.inputs = np.array([didx if int(i) == out else int(i) for i in later.inputs], np.int32)
    g.outputs = np.array([didx if int(i) == out else int(i) for i in g.outputs], np.int32)
    ops = []
    for code, ins, outs in (
        (s.BuiltinOperator.QUANTIZE, out, qidx),
        (s.BuiltinOperator.DEQUANTIZE, qidx, didx),
    ):
        op = s.OperatorT()
        op.opcodeIndex, op.inputs, op.outputs = (
            _opcode_index(s, mt, code),
            np.array([ins], np.int32),
            np.array([outs], np.int32),
        )
        ops.append(op)
    g.operators = [*g.operators[: op_index + 1], *ops, *g.operators[op_index + 1 :]]
    return _pack(mt, len(fp32.data))


def _buffer_bytes(model: TFLiteModel, t: Any) -> bytes:
    """The constant data of tensor ``t`` (a :class:`Tensor` of ``model``)."""
    m = _schema_module().Model.GetRootAs(model.data, 0)
    return m.Buffers(t.buffer).DataAsNumpy().tobytes()


def qparams_for_range(lo: float, hi: float) -> tuple[float, int]:
    """TFLite's asymmetric int8 (scale, zero point) for the float range ``[lo, hi]`` (0 always inside)."""
    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    scale = (hi - lo) / 255.0
    if scale <= 0:
        return 1.0, -128
    zp = int(np.clip(np.round(-128 - lo / scale), -128, 127))
    return scale, zp


def _consumers(model: TFLiteModel) -> dict[int, list[int]]:
    readers: dict[int, list[int]] = {}
    for op in model.operators:
        for i in op.inputs:
            if i >= 0:
                readers.setdefault(int(i), []).append(op.index)
    return readers


def rerangeable(model: TFLiteModel) -> dict[int, list[int]]:
    """``{tensor: [tied tensors that follow it]}`` for the activations whose parameters may be rewritten:
    produced by a rescaling op, not a model input or output, read only by rescaling or tied ops."""
    readers = _consumers(model)
    producers = {int(o): op for op in model.operators for o in op.outputs if o >= 0}
    io = set(model.inputs) | set(model.outputs)
    out: dict[int, list[int]] = {}
    for t, op in producers.items():
        if op.opcode not in RESCALING_OPS or t in io or not model.tensors[t].is_quantized:
            continue
        group, ok, todo = [], True, [t]
        while todo and ok:
            cur = todo.pop()
            for r in readers.get(cur, []):
                rop = model.operators[r]
                if rop.opcode in TIED_OPS and int(rop.inputs[0]) == cur:
                    nxt = [int(o) for o in rop.outputs if o >= 0]
                    ok = ok and not (set(nxt) & io)
                    group += nxt
                    todo += nxt
                elif rop.opcode not in RESCALING_OPS:
                    ok = False
        if ok:
            out[t] = group
    return out


def with_activation_ranges(model: TFLiteModel, ranges: dict[int, tuple[float, float]]) -> bytes:
    """The int8 model with each tensor of ``ranges`` (a key of :func:`rerangeable`) quantized for its
    float range, its tied copies following and the consumers' int32 biases re-quantized."""
    groups = rerangeable(model)
    bad = sorted(set(ranges) - set(groups))
    if bad:
        raise EdgekdError(f"{model.source}: tensor(s) {bad[:5]} cannot be given new quantization parameters")
    s, mt = _unpack(model.data, model.source)
    g = mt.subgraphs[0]
    readers = _consumers(model)
    for t, (lo, hi) in ranges.items():
        scale, zp = qparams_for_range(lo, hi)
        old = float(model.tensors[t].scale[0])
        for member in [t, *groups[t]]:
            q = g.tensors[member].quantization
            q.scale, q.zeroPoint = [scale], [zp]
            for r in readers.get(member, []):
                _rescale_bias(s, mt, g, model, r, member, old / scale)
    return _pack(mt, len(model.data))


def _rescale_bias(
    s: Any, mt: Any, g: Any, model: TFLiteModel, op_index: int, tensor: int, factor: float
) -> None:
    """Re-quantize the int32 bias of a conv / FC op whose input ``tensor``'s scale changed by 1/``factor``."""
    op = model.operators[op_index]
    if op.opcode not in BIAS_OPS or int(op.inputs[0]) != tensor or len(op.inputs) < 3 or op.inputs[2] < 0:
        return
    bt = model.tensors[int(op.inputs[2])]
    if bt.dtype != "int32" or not bt.has_data:
        return
    raw = np.frombuffer(_buffer_bytes(model, bt), dtype=np.int32)
    new = np.clip(np.round(raw.astype(np.float64) * factor), -(2**31), 2**31 - 1).astype(np.int32)
    tt = g.tensors[int(op.inputs[2])]
    _set_const(s, mt, tt, new)
    tt.quantization.scale = [float(v) / factor for v in tt.quantization.scale]
