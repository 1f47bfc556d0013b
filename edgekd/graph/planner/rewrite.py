"""Writing a re-ordered / offline-planned flatbuffer that TFLite Micro reproduces."""

from __future__ import annotations

import os
import struct
from collections.abc import Sequence

from edgekd.errors import EdgekdError
from edgekd.graph.planner.lifetimes import OFFLINE_METADATA, Plan, _as_model, _subgraphs
from edgekd.graph.tflite_model import TFLiteModel

# ------------------------------------------------------------------------------------------------
# writing a re-ordered / offline-planned flatbuffer
# ------------------------------------------------------------------------------------------------


def reorder_model(
    model: TFLiteModel | bytes | str | os.PathLike,
    order: Sequence[int],
    offsets: dict[int, int] | dict[tuple[int, int], int] | None = None,
) -> bytes:
    """Flatbuffer bytes with subgraph 0's operators in ``order`` (a topological order) and, when
    ``offsets`` (subgraph-0 tensor index, or (subgraph, tensor), -> arena offset) is given, an ``OfflineMemoryAllocation`` metadata entry
    so TFLM uses those offsets. Buffers are re-aligned with TFLM's flatbuffer-align tool when available.
    """
    import flatbuffers
    import numpy as np

    from edgekd.graph.tflite_model import _schema_module

    m = _as_model(model)
    n = len(m.operators)
    if sorted(order) != list(range(n)):
        raise EdgekdError(f"{m.source}: operator order must be a permutation of 0..{n - 1}")
    pos = {op: k for k, op in enumerate(order)}
    producer = {t: op.index for op in m.operators for t in op.outputs}
    for op in m.operators:
        for t in op.inputs:
            if t in producer and pos[producer[t]] > pos[op.index]:
                raise EdgekdError(
                    f"{m.source}: order runs operator {op.index} ({op.opcode}) before the producer of its "
                    f"input tensor {t}; pass a topological order"
                )
    s = _schema_module()
    mt = s.ModelT.InitFromPackedBuf(bytearray(m.data), 0)
    sg = mt.subgraphs[0]
    sg.operators = [sg.operators[i] for i in order]
    if offsets is not None:
        keyed = {(k if isinstance(k, tuple) else (0, k)): v for k, v in offsets.items()}
        keys = [(g.index, t.index) for g in _subgraphs(m) for t in g.tensors]
        words = [0, 0, len(keys)] + [int(keyed.get(k, -1)) for k in keys]
        buf = s.BufferT()
        buf.data = np.frombuffer(struct.pack(f"<{len(words)}i", *words), dtype=np.uint8)
        mt.buffers.append(buf)
        md = s.MetadataT()
        md.name = OFFLINE_METADATA
        md.buffer = len(mt.buffers) - 1
        mt.metadata = [
            x for x in (mt.metadata or []) if x.name not in (OFFLINE_METADATA, OFFLINE_METADATA.encode())
        ]
        mt.metadata.append(md)
    builder = flatbuffers.Builder(len(m.data) + 4096)
    builder.Finish(mt.Pack(builder), file_identifier=b"TFL3")
    return _align(bytes(builder.Output()))


def _align(data: bytes) -> bytes:
    """Re-align buffers (16 bytes) with tflite_micro's C++ flatbuffer align tool; as-is if unavailable."""
    import tempfile
    from pathlib import Path

    try:
        from tflite_micro.tensorflow.lite.micro.tools import tflite_flatbuffer_align_wrapper as w
    except ImportError:  # pragma: no cover
        return data
    with tempfile.TemporaryDirectory() as d:
        src, dst = Path(d) / "in.tflite", Path(d) / "out.tflite"
        src.write_bytes(data)
        try:
            w.align_tflite_model(str(src), str(dst))
            out = dst.read_bytes()
        except Exception:  # pragma: no cover - keep the unaligned (still valid) file
            return data
    return out if out[4:8] == b"TFL3" else data


def apply_plan(model: TFLiteModel | bytes | str | os.PathLike, plan: Plan) -> bytes:
    """Write ``plan`` into the model: re-ordered operators and, if the plan needs them, offline offsets.

    ``measure_arena(apply_plan(m, plan))["head"] == plan.head`` for plans from this module.
    """
    offsets = plan.offsets_by_subgraph if plan.needs_offline_offsets else None
    return reorder_model(model, plan.order, offsets)
