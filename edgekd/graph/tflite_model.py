"""Read a ``.tflite`` flatbuffer into plain Python objects: tensors, operators, quantization.

Parsing uses the flatbuffers schema module bundled with ``tflite_micro`` (imports in ~0.1 s), falling
back to TensorFlow's ``schema_py_generated`` (imports TensorFlow: seconds). Only the primary subgraph
(index 0) is exposed as ``tensors``/``operators``; other subgraphs are counted in ``num_subgraphs``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from types import ModuleType
from typing import Any

from edgekd.errors import EdgekdError, error_line
from edgekd.files import MAX_TFLITE_BYTES, read_bytes_capped

MAX_RANK = 8  # dimensions per tensor; TFLite Micro kernels handle at most 6

# TensorType enum value -> (numpy-style dtype name, bytes per element as TFLM counts them).
_DTYPES: dict[int, tuple[str, int]] = {
    0: ("float32", 4),
    1: ("float16", 2),
    2: ("int32", 4),
    3: ("uint8", 1),
    4: ("int64", 8),
    5: ("string", 1),
    6: ("bool", 1),
    7: ("int16", 2),
    8: ("complex64", 8),
    9: ("int8", 1),
    10: ("float64", 8),
    11: ("complex128", 16),
    12: ("uint64", 8),
    13: ("resource", 1),
    14: ("variant", 1),
    15: ("uint32", 4),
    16: ("uint16", 2),
    17: ("int4", 1),
    18: ("bfloat16", 2),
}
_FLOAT_TYPES = {"float32", "float16", "float64", "bfloat16"}
_INT_ACT_TYPES = {"int8", "int16"}

_schema: ModuleType | None = None
_op_names: dict[int, str] | None = None


def _schema_module() -> ModuleType:
    """The generated flatbuffers schema module (cached); prefers the light tflite_micro copy."""
    global _schema, _op_names
    if _schema is None:
        try:
            from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as mod
        except ImportError:  # pragma: no cover - tflite_micro is a hard dependency
            from tensorflow.lite.python import schema_py_generated as mod  # type: ignore[no-redef]
        _schema = mod
        _op_names = {
            v: k for k, v in vars(mod.BuiltinOperator).items() if not k.startswith("_") and isinstance(v, int)
        }
    return _schema


def builtin_op_name(code: int) -> str:
    """Name of a ``BuiltinOperator`` code, e.g. 3 -> ``CONV_2D``."""
    _schema_module()
    assert _op_names is not None
    return _op_names.get(code, f"BUILTIN_{code}")


@dataclass(frozen=True)
class Tensor:
    """One tensor of the primary subgraph."""

    index: int
    name: str
    shape: tuple[int, ...]
    dtype: str
    nbytes: int
    scale: tuple[float, ...] = ()
    zero_point: tuple[int, ...] = ()
    quantized_dimension: int = 0
    buffer: int = 0
    has_data: bool = False
    is_variable: bool = False
    sparse: bool = False

    @property
    def is_constant(self) -> bool:
        """True when the tensor's values live in the flatbuffer (weights, biases, shape constants)."""
        return self.has_data

    @property
    def is_quantized(self) -> bool:
        return len(self.scale) > 0


@dataclass(frozen=True)
class Operator:
    """One operator, in execution order. ``inputs`` may contain -1 for omitted optional inputs."""

    index: int
    opcode: str
    builtin_code: int
    custom_code: str | None
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    intermediates: tuple[int, ...] = ()
    subgraph_calls: tuple[int, ...] = ()  # IF (then, else) / WHILE (cond, body) / CALL_ONCE (init)

    @property
    def name(self) -> str:
        """Builtin name (``CONV_2D``) or, for custom ops, ``CUSTOM:<code>``."""
        return f"CUSTOM:{self.custom_code}" if self.custom_code is not None else self.opcode


@dataclass
class SubGraph:
    """One subgraph: its own tensor and operator lists (indices are local to the subgraph)."""

    index: int
    name: str
    tensors: list[Tensor]
    operators: list[Operator]
    inputs: list[int]
    outputs: list[int]


@dataclass
class TFLiteModel:
    """A parsed ``.tflite`` model. ``tensors``/``operators``/``inputs``/``outputs`` are those of the
    primary subgraph 0; ``subgraphs`` holds all of them (control flow: IF / WHILE / CALL_ONCE)."""

    source: str
    data: bytes = field(repr=False)
    version: int
    description: str
    tensors: list[Tensor]
    operators: list[Operator]
    inputs: list[int]
    outputs: list[int]
    num_subgraphs: int
    metadata: dict[str, bytes] = field(default_factory=dict, repr=False)
    subgraphs: list[SubGraph] = field(default_factory=list, repr=False)
    buffer_sizes: list[int] = field(default_factory=list, repr=False)  # bytes of data per buffer

    # ---- ops ---------------------------------------------------------------------------------
    def op_names(self) -> list[str]:
        """Sorted unique builtin op names (custom ops appear as ``CUSTOM:<code>``)."""
        return sorted({op.name for op in self.operators})

    def custom_ops(self) -> list[str]:
        return sorted({op.custom_code for op in self.operators if op.custom_code is not None})

    # ---- I/O ---------------------------------------------------------------------------------
    def _details(self, idx: list[int]) -> list[dict[str, Any]]:
        out = []
        for i in idx:
            t = self.tensors[i]
            out.append(
                {
                    "index": t.index,
                    "name": t.name,
                    "shape": list(t.shape),
                    "dtype": t.dtype,
                    "scale": t.scale[0] if len(t.scale) == 1 else (list(t.scale) if t.scale else 0.0),
                    "zero_point": t.zero_point[0]
                    if len(t.zero_point) == 1
                    else (list(t.zero_point) if t.zero_point else 0),
                    "nbytes": t.nbytes,
                }
            )
        return out

    def input_details(self) -> list[dict[str, Any]]:
        """Per model input: index, name, shape, dtype, scale, zero_point, nbytes."""
        return self._details(self.inputs)

    def output_details(self) -> list[dict[str, Any]]:
        """Per model output: index, name, shape, dtype, scale, zero_point, nbytes."""
        return self._details(self.outputs)

    # ---- classification ----------------------------------------------------------------------
    @cached_property
    def activations(self) -> list[Tensor]:
        """Tensors computed at run time (no constant data, not variables): what the arena holds."""
        return [t for t in self.tensors if not t.has_data and not t.is_variable]

    def _io_dtypes(self) -> set[str]:
        return {self.tensors[i].dtype for i in self.inputs + self.outputs}

    def is_full_integer(self) -> bool:
        """int8/int16 activations everywhere, model input and output included (MCU-ready).

        Zero-size placeholder tensors (e.g. LSTM ``intermediates``) do not count.
        """
        if not self._io_dtypes() <= _INT_ACT_TYPES:
            return False
        return not any(t.dtype in _FLOAT_TYPES and t.nbytes > 0 for t in self.activations)

    def is_hybrid(self) -> bool:
        """Dynamic-range quantized: float activations fed to ops together with int8 constant weights."""
        for op in self.operators:
            ins = [self.tensors[i] for i in op.inputs if i >= 0]
            float_act = any(not t.has_data and t.dtype in _FLOAT_TYPES for t in ins)
            int8_weight = any(t.has_data and t.dtype in ("int8", "int4") for t in ins)
            if float_act and int8_weight and op.opcode not in ("QUANTIZE", "DEQUANTIZE"):
                return True
        return False

    def is_float(self) -> bool:
        """Float activations and float (or float16 + DEQUANTIZE) weights: no integer quantization."""
        if self.is_hybrid():
            return False
        if any(t.dtype in _INT_ACT_TYPES and t.is_quantized for t in self.activations):
            return False
        return any(t.dtype in _FLOAT_TYPES and t.nbytes > 0 for t in self.activations)

    @property
    def kind(self) -> str:
        """One word: ``full_integer``, ``hybrid``, ``float16``, ``float``, ``integer_float_io`` or ``mixed``."""
        if self.is_full_integer():
            return "full_integer"
        if self.is_hybrid():
            return "hybrid"
        if self.is_float():
            has_fp16 = any(t.has_data and t.dtype == "float16" for t in self.tensors)
            return "float16" if has_fp16 else "float"
        if self._io_dtypes() <= _FLOAT_TYPES and {op.opcode for op in self.operators} & {
            "QUANTIZE",
            "DEQUANTIZE",
        }:
            return "integer_float_io"
        return "mixed"

    def summary(self) -> dict[str, Any]:
        """A JSON-friendly digest: op counts, I/O details, kind, sizes."""
        counts: dict[str, int] = {}
        for op in self.operators:
            counts[op.name] = counts.get(op.name, 0) + 1
        return {
            "source": self.source,
            "kind": self.kind,
            "num_operators": len(self.operators),
            "num_tensors": len(self.tensors),
            "op_counts": dict(sorted(counts.items())),
            "inputs": self.input_details(),
            "outputs": self.output_details(),
            "constant_bytes": sum(t.nbytes for t in self.tensors if t.has_data),
            "file_bytes": len(self.data),
        }


def read_tflite_bytes(path: str | os.PathLike) -> bytes:
    """The bytes of a ``.tflite`` file: a regular file (no FIFO, device or link to one) under
    :data:`edgekd.files.MAX_TFLITE_BYTES`, else one EdgekdError line naming it."""
    return read_bytes_capped(path, MAX_TFLITE_BYTES, "TFLite model")


def bytes_of(
    path_or_bytes: str | os.PathLike | bytes | bytearray | memoryview, source: str | None = None
) -> tuple[bytes, str]:
    if isinstance(path_or_bytes, (bytes, bytearray, memoryview)):
        return bytes(path_or_bytes), source or "<bytes>"
    return read_tflite_bytes(path_or_bytes), source or str(Path(path_or_bytes))


def parse_tflite(data: bytes, source: str) -> TFLiteModel:
    """Parse the bytes of a ``.tflite`` (not checked structurally: :func:`edgekd.graph.read_tflite`
    does both). Raises EdgekdError naming ``source`` for anything that is not one."""
    if len(data) < 8 or data[4:8] != b"TFL3":
        raise EdgekdError(
            f"{source}: not a TFLite flatbuffer (no 'TFL3' identifier in {len(data)} bytes); "
            "export a .tflite model first"
        )
    try:
        return _parse(data, source)
    except EdgekdError:
        raise
    except Exception as e:  # flatbuffers raises struct/index errors on corrupt data
        raise EdgekdError(
            f"{source}: not a TFLite flatbuffer or corrupt ({error_line(e, 160)}); re-export the model"
        ) from None


def decode_everything(data: bytes) -> None:
    """Decode every table of the flatbuffer (signatures, metadata, options, ...) with the object API;
    raises what flatbuffers raises on a corrupt one."""
    _schema_module().ModelT.InitFromPackedBuf(bytearray(data), 0)


def _vector_end(table: Any, slot: int) -> int:
    """Byte position just past the vector in field ``slot`` of a flatbuffers table (0 if absent)."""
    o = table.Offset(slot)
    if not o:
        return 0
    return table.Vector(o) + table.VectorLen(o)


def _buffer_sizes(m: Any, data: bytes, source: str) -> list[int]:
    """Bytes of data in each buffer (inline vector or external offset/size), checked against the file."""
    sizes = []
    for b in range(m.BuffersLength()):
        buf = m.Buffers(b)
        if buf is None:
            sizes.append(0)
            continue
        if _vector_end(buf._tab, 4) > len(data):
            raise EdgekdError(
                f"{source}: buffer {b} runs past the end of the file (truncated?); re-export the model"
            )
        n = buf.DataLength()
        if not n and buf.Offset() > 1:
            if buf.Offset() + buf.Size() > len(data):
                raise EdgekdError(
                    f"{source}: buffer {b} points at bytes {buf.Offset()}..{buf.Offset() + buf.Size()} past "
                    f"the end of the {len(data)}-byte file (truncated?); re-export the model"
                )
            n = buf.Size()
        sizes.append(int(n))
    return sizes


def _parse(data: bytes, source: str) -> TFLiteModel:
    s = _schema_module()
    m = s.Model.GetRootAs(data, 0)
    version = m.Version()
    if m.SubgraphsLength() < 1:
        raise EdgekdError(f"{source}: TFLite flatbuffer has no subgraph; re-export the model")
    for what, n in (("subgraphs", m.SubgraphsLength()), ("buffers", m.BuffersLength()),
                    ("operator codes", m.OperatorCodesLength())):  # fmt: skip
        if n * 4 > len(data):
            raise EdgekdError(
                f"{source}: declares {n} {what} in {len(data)} bytes (corrupt); re-export the model"
            )
    n_buffers = m.BuffersLength()
    buffer_sizes = _buffer_sizes(m, data, source)
    buf_has_data = [n > 0 for n in buffer_sizes]

    codes: list[tuple[int, str | None]] = []
    for i in range(m.OperatorCodesLength()):
        oc = m.OperatorCodes(i)
        code = max(oc.BuiltinCode(), oc.DeprecatedBuiltinCode())
        custom = oc.CustomCode()
        codes.append((code, custom.decode("utf-8", "replace") if custom is not None else None))

    subgraphs = [
        _parse_subgraph(s, m.Subgraphs(k), k, codes, buf_has_data, source) for k in range(m.SubgraphsLength())
    ]
    main = subgraphs[0]

    metadata: dict[str, bytes] = {}
    for i in range(m.MetadataLength()):
        md = m.Metadata(i)
        nm = md.Name()
        b = md.Buffer()
        if nm is not None and 0 <= b < n_buffers:
            buf = m.Buffers(b)
            metadata[nm.decode("utf-8", "replace")] = buf.DataAsNumpy().tobytes() if buf.DataLength() else b""
    desc = m.Description()
    return TFLiteModel(
        source=source,
        data=data,
        version=version,
        description=desc.decode("utf-8", "replace") if desc else "",
        tensors=main.tensors,
        operators=main.operators,
        inputs=main.inputs,
        outputs=main.outputs,
        num_subgraphs=m.SubgraphsLength(),
        metadata=metadata,
        subgraphs=subgraphs,
        buffer_sizes=buffer_sizes,
    )


def _subgraph_calls(s: ModuleType, o: Any) -> tuple[int, ...]:
    """Subgraphs a control-flow operator invokes, in the order TFLM plans them."""
    kind = o.BuiltinOptionsType()
    table = o.BuiltinOptions()
    if table is None:
        return ()
    opts = s.BuiltinOptions
    if kind == opts.WhileOptions:
        w = s.WhileOptions()
        w.Init(table.Bytes, table.Pos)
        return (w.CondSubgraphIndex(), w.BodySubgraphIndex())
    if kind == opts.IfOptions:
        f = s.IfOptions()
        f.Init(table.Bytes, table.Pos)
        return (f.ThenSubgraphIndex(), f.ElseSubgraphIndex())
    if kind == opts.CallOnceOptions:
        c = s.CallOnceOptions()
        c.Init(table.Bytes, table.Pos)
        return (c.InitSubgraphIndex(),)
    return ()


def _parse_subgraph(
    s: ModuleType,
    sg: Any,
    k: int,
    codes: list[tuple[int, str | None]],
    buf_has_data: list[bool],
    source: str = "<bytes>",
) -> SubGraph:
    n_buffers = len(buf_has_data)
    where = f"subgraph {k} " if k else ""
    n_bytes = len(sg._tab.Bytes)
    if (sg.TensorsLength() + sg.OperatorsLength()) * 4 > n_bytes:
        raise EdgekdError(f"{source}: {where}declares {sg.TensorsLength()} tensors and {sg.OperatorsLength()} "
                          "operators, more than the file can hold (corrupt); re-export the model")  # fmt: skip
    tensors: list[Tensor] = []
    for i in range(sg.TensorsLength()):
        t = sg.Tensors(i)
        dtype, item = _DTYPES.get(t.Type(), (f"type{t.Type()}", 1))
        if t.ShapeLength() > MAX_RANK:
            raise EdgekdError(f"{source}: {where}tensor {i} has {t.ShapeLength()} dimensions (more than "
                              f"{MAX_RANK}; corrupt?); re-export the model")  # fmt: skip
        shape = tuple(int(d) for d in t.ShapeAsNumpy()) if t.ShapeLength() else ()
        n = 1
        for d in shape:
            n *= max(int(d), 0)
        nbytes = (n + 1) // 2 if dtype == "int4" else n * item
        q = t.Quantization()
        scale: tuple[float, ...] = ()
        zp: tuple[int, ...] = ()
        qdim = 0
        if q is not None:
            if q.ScaleLength():
                scale = tuple(float(v) for v in q.ScaleAsNumpy())
            if q.ZeroPointLength():
                zp = tuple(int(v) for v in q.ZeroPointAsNumpy())
            qdim = q.QuantizedDimension()
        bidx = t.Buffer()
        name = t.Name()
        tensors.append(
            Tensor(
                index=i,
                name=name.decode("utf-8", "replace") if name else f"tensor_{i}",
                shape=shape,
                dtype=dtype,
                nbytes=nbytes,
                scale=scale,
                zero_point=zp,
                quantized_dimension=qdim,
                buffer=bidx,
                has_data=0 <= bidx < n_buffers and buf_has_data[bidx],
                is_variable=bool(t.IsVariable()),
                sparse=t.Sparsity() is not None,
            )
        )
    operators: list[Operator] = []
    for i in range(sg.OperatorsLength()):
        o = sg.Operators(i)
        if not 0 <= o.OpcodeIndex() < len(codes):
            raise EdgekdError(f"{source}: {where}operator {i} uses operator code {o.OpcodeIndex()} but the "
                              f"model has {len(codes)} (corrupt); re-export the model")  # fmt: skip
        code, custom = codes[o.OpcodeIndex()]
        operators.append(
            Operator(
                index=i,
                opcode=builtin_op_name(code),
                builtin_code=code,
                custom_code=custom if code == s.BuiltinOperator.CUSTOM else None,
                inputs=tuple(int(v) for v in o.InputsAsNumpy()) if o.InputsLength() else (),
                outputs=tuple(int(v) for v in o.OutputsAsNumpy()) if o.OutputsLength() else (),
                intermediates=tuple(int(v) for v in o.IntermediatesAsNumpy())
                if o.IntermediatesLength()
                else (),
                subgraph_calls=_subgraph_calls(s, o),
            )
        )
    name = sg.Name()
    return SubGraph(
        index=k,
        name=name.decode("utf-8", "replace") if name else f"subgraph_{k}",
        tensors=tensors,
        operators=operators,
        inputs=[int(v) for v in sg.InputsAsNumpy()] if sg.InputsLength() else [],
        outputs=[int(v) for v in sg.OutputsAsNumpy()] if sg.OutputsLength() else [],
    )
