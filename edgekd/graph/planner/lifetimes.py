"""Buffers, lifetimes (TFLM allocation scopes) and the scratch buffers kernels request."""

from __future__ import annotations

import os
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from edgekd.errors import EdgekdError
from edgekd.graph.reader import read_tflite
from edgekd.graph.tflite_model import TFLiteModel
from edgekd.graph.validate import control_flow_visits

ALIGN = 16
OFFLINE_METADATA = "OfflineMemoryAllocation"

# (model, operator index, subgraph) -> bytes of each scratch buffer that operator needs while it runs
ScratchRequests = Callable[[TFLiteModel, int, int], list[int]]


def align_up(n: int, a: int = ALIGN) -> int:
    return (n + a - 1) // a * a


@dataclass
class Buffer:
    """One planned buffer: a tensor (``tensor >= 0``) or a kernel scratch buffer (``tensor == -1``)."""

    tensor: int
    size: int  # aligned bytes
    first: int  # allocation scope of creation (0 = before the first op, op i -> i + 1)
    last: int
    offline_offset: int = -1
    op: int = -1  # operator index owning a scratch buffer
    name: str = ""
    offset: int = -1
    subgraph: int = 0

    def overlaps(self, other: Buffer) -> bool:
        return not (self.first > other.last or other.first > self.last)


@dataclass
class Plan:
    """An arena plan. ``order`` is the operator execution order (indices into the model's operators)."""

    buffers: list[Buffer]
    order: list[int]
    head: int
    timeline: list[int] = field(default_factory=list)
    method: str = "tflm-greedy"
    needs_offline_offsets: bool = False  # True: TFLM reproduces it only with OfflineMemoryAllocation

    @property
    def offsets(self) -> dict[int, int]:
        """Subgraph-0 tensor index -> arena offset."""
        return {b.tensor: b.offset for b in self.buffers if b.tensor >= 0 and b.subgraph == 0}

    @property
    def offsets_by_subgraph(self) -> dict[tuple[int, int], int]:
        """(subgraph, tensor index) -> arena offset, every subgraph."""
        return {(b.subgraph, b.tensor): b.offset for b in self.buffers if b.tensor >= 0}

    @property
    def sizes(self) -> dict[int, int]:
        """Subgraph-0 tensor index -> planned (16-byte aligned) size."""
        return {b.tensor: b.size for b in self.buffers if b.tensor >= 0 and b.subgraph == 0}

    @property
    def lifetimes(self) -> dict[int, tuple[int, int]]:
        """Subgraph-0 tensor index -> (first scope, last scope). Without control flow, the op at
        position k of ``order`` runs at scope k+1 (scope 0 is before the first op)."""
        return {b.tensor: (b.first, b.last) for b in self.buffers if b.tensor >= 0 and b.subgraph == 0}

    @property
    def peak_live(self) -> int:
        """Largest sum of live buffer sizes at any operator: a lower bound for any placement."""
        return max(self.timeline, default=0)

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "head": self.head,
            "needs_offline_offsets": self.needs_offline_offsets,
            "peak_live": self.peak_live,
            "order": self.order,
            "timeline": self.timeline,
            "buffers": [
                {
                    "tensor": b.tensor,
                    "subgraph": b.subgraph,
                    "name": b.name,
                    "op": b.op,
                    "offset": b.offset,
                    "size": b.size,
                    "first": b.first,
                    "last": b.last,
                }
                for b in self.buffers
            ],
        }


# ------------------------------------------------------------------------------------------------
# scratch buffers requested by TFLM reference kernels (host build) in Prepare
# ------------------------------------------------------------------------------------------------


def _numel(shape: Sequence[int]) -> int:
    n = 1
    for d in shape:
        n *= max(int(d), 0)
    return n


def scratch_requests(model: TFLiteModel, op_index: int, subgraph: int = 0) -> list[int]:
    """Bytes of each scratch buffer the host (reference-kernel) TFLM build requests for an operator.

    Modelled and checked against the host interpreter: MEAN/SUM/REDUCE_MAX/REDUCE_MIN (4 bytes per
    input dim + 4 per axis, plus an int32 accumulator per output element for int8/int16 MEAN/SUM),
    TRANSPOSE_CONV int8/int16 (int32/int64 accumulator per output element; float: none),
    UNIDIRECTIONAL_SEQUENCE_LSTM (4 buffers the size of the cell state). From kernel source only:
    int4 weights of CONV_2D/DEPTHWISE_CONV_2D/FULLY_CONNECTED (unpacked to int8). Measured to request
    none: CONV_2D, DEPTHWISE_CONV_2D, FULLY_CONNECTED, pooling, SOFTMAX, LOG_SOFTMAX, ADD, MUL,
    CONCATENATION, PAD, RESHAPE, RESIZE_*, TRANSPOSE, STRIDED_SLICE, BATCH_MATMUL, ARG_MAX, activations.
    Other kernels (e.g. SVDF) are not modelled. Optimized kernel libraries
    (CMSIS-NN, ESP-NN, ...) request other scratch buffers, so their head differs from the host figure.
    """
    sg = model.subgraphs[subgraph] if model.subgraphs else None
    op = (sg.operators if sg else model.operators)[op_index]
    t = sg.tensors if sg else model.tensors
    if op.opcode in ("MEAN", "SUM", "REDUCE_MAX", "REDUCE_MIN", "REDUCE_PROD"):
        inp, axis, out = t[op.inputs[0]], t[op.inputs[1]], t[op.outputs[0]]
        rank_bytes = 4 * max(len(inp.shape), 1)
        axis_bytes = 4 * max(_numel(axis.shape), 1)
        reqs = []
        if op.opcode in ("MEAN", "SUM") and inp.dtype in ("int8", "int16"):
            reqs.append(4 * max(_numel(out.shape), 1))  # int32 accumulator per output element
        return reqs + [rank_bytes, axis_bytes]  # temp index + resolved axis
    if op.opcode == "UNIDIRECTIONAL_SEQUENCE_LSTM" and len(op.inputs) > 19 and op.inputs[19] >= 0:
        cell = t[op.inputs[19]]  # cell state: batch x n_cell, int16 (int8 model) or float32
        return [cell.nbytes] * 4
    if op.opcode in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED") and len(op.inputs) > 1:
        w = t[op.inputs[1]]
        if w.dtype == "int4":  # unpacked to int8 in a scratch buffer (from kernel source, not measured)
            return [_numel(w.shape)]
        return []
    if op.opcode == "TRANSPOSE_CONV":
        out = t[op.outputs[0]]
        inp = t[op.inputs[2]]
        if inp.dtype == "int8":
            return [4 * out.nbytes]
        if inp.dtype == "int16":
            return [8 * (out.nbytes // 2)]
    return []


# ------------------------------------------------------------------------------------------------
# buffers and lifetimes
# ------------------------------------------------------------------------------------------------


def _as_model(model: TFLiteModel | bytes | str | os.PathLike) -> TFLiteModel:
    return model if isinstance(model, TFLiteModel) else read_tflite(model)


def _subgraphs(model: TFLiteModel) -> list[Any]:
    if model.subgraphs:
        return model.subgraphs
    from edgekd.graph.tflite_model import SubGraph

    return [SubGraph(0, "main", model.tensors, model.operators, model.inputs, model.outputs)]


def offline_offsets(model: TFLiteModel) -> list[int] | None:
    """Offsets from the ``OfflineMemoryAllocation`` metadata (-1 = plan online), or None.

    One entry per tensor of every subgraph, subgraph 0's tensors first.
    """
    raw = model.metadata.get(OFFLINE_METADATA)
    if raw is None:
        return None
    n_tensors = sum(len(sg.tensors) for sg in _subgraphs(model))
    words = struct.unpack(f"<{len(raw) // 4}i", raw[: len(raw) // 4 * 4])
    if len(words) < 3 or words[2] != n_tensors or len(words) < 3 + n_tensors:
        raise EdgekdError(
            f"{model.source}: OfflineMemoryAllocation metadata lists {words[2] if len(words) > 2 else '?'} "
            f"offsets for {n_tensors} tensors; TFLM rejects this model, re-export it"
        )
    return list(words[3 : 3 + n_tensors])


def _mark(
    model: TFLiteModel,
    order: Sequence[int] | None,
    scratch: bool,
    use_offline: bool,
    requests: ScratchRequests | None = None,
    alias: dict[int, int] | None = None,
) -> tuple[list[Buffer], list[tuple[int, int]], int]:
    """TFLM's AllocationInfoBuilder: buffers with lifetimes, each subgraph-0 op's scope span, and
    the number of scopes. Control-flow ops open one nested scope per subgraph they call. Scratch
    buffers come from ``requests`` (default: TFLM's reference kernels, :func:`scratch_requests`);
    ``alias`` (see :func:`merge_aliases`) makes in-place outputs share their input's buffer."""
    requests = requests or scratch_requests
    sgs = _subgraphs(model)
    control_flow_visits(model)  # bounded work: exponentially nested IF/WHILE is refused in one line
    n_ops = len(sgs[0].operators)
    order = list(range(n_ops)) if order is None else list(order)
    if sorted(order) != list(range(n_ops)):
        raise EdgekdError(f"{model.source}: operator order must be a permutation of 0..{n_ops - 1}")
    offl = offline_offsets(model) if use_offline else None
    first: dict[tuple[int, int], int] = {}
    last: dict[tuple[int, int], int] = {}
    scratch_reqs: list[tuple[tuple[int, int], Buffer]] = []
    spans: list[tuple[int, int]] = []
    scope = 0

    def created(key: tuple[int, int], at: int) -> None:
        first[key] = at
        last[key] = at

    def mark(sgi: int, op_order: Sequence[int], depth: int) -> None:
        nonlocal scope
        if depth > 32:
            raise EdgekdError(f"{model.source}: control-flow subgraphs nest deeper than 32; cannot plan")
        sg = sgs[sgi]
        for i in sg.inputs:
            created((sgi, i), scope)
        for i in sg.outputs:
            created((sgi, i), scope)
        for pos, oi in enumerate(op_order):
            scope += 1
            op = sg.operators[oi]
            for i in op.outputs:
                created((sgi, i), scope)
            start = scope
            for sub in op.subgraph_calls:
                scope += 1
                mark(sub, range(len(sgs[sub].operators)), depth + 1)
            for i in op.inputs:
                if i >= 0:
                    last[(sgi, i)] = scope
            for i in op.outputs:
                last[(sgi, i)] = scope
            if sgi == 0 and depth == 0:
                spans.append((start, scope))
            if scratch:
                for nbytes in requests(model, oi, sgi):
                    buf = Buffer(-1, align_up(nbytes), start, scope, op=oi, subgraph=sgi)
                    buf.name = f"scratch:{op.opcode}#{oi}" + (f"@sg{sgi}" if sgi else "")
                    scratch_reqs.append(((sgi, pos), buf))
        for i in sg.outputs:
            last[(sgi, i)] = scope

    mark(0, order, 0)
    bufs: list[Buffer] = []
    base = 0
    for sg in sgs:
        for t in sg.tensors:
            if not (t.has_data or t.is_variable or t.nbytes == 0):
                key = (sg.index, t.index)
                b = Buffer(
                    t.index,
                    align_up(t.nbytes),
                    first.get(key, -1),
                    last.get(key, -1),
                    offline_offset=offl[base + t.index] if offl is not None else -1,
                    name=t.name,
                    subgraph=sg.index,
                )
                bufs.append(b)
        base += len(sg.tensors)
    # TFLM prepares subgraphs in index order, nodes in file order: that is the scratch request order
    scratch_reqs.sort(key=lambda r: r[0])
    return merge_aliases(bufs, alias or {}) + [b for _, b in scratch_reqs], spans, scope


def alias_root(alias: dict[int, int], t: int) -> int:
    """The tensor whose buffer ``t`` occupies (following chains of in-place operators)."""
    while t in alias:
        t = alias[t]
    return t


class View(int):
    """An ``alias`` target whose output is never written: its readers read the input's bytes (a PAD
    fused into the convolution after it), so the shared buffer keeps the input's size."""


def merge_aliases(bufs: list[Buffer], alias: dict[int, int]) -> list[Buffer]:
    """Subgraph-0 buffers with each ``alias`` output (written in place over input ``alias[out]``)
    folded into its input's buffer: one buffer living from the input's creation to the output's
    last use, as large as either (as the input for a :class:`View`)."""
    if not alias:
        return bufs
    by_tensor = {b.tensor: b for b in bufs if b.subgraph == 0}
    for out in alias:
        root, bo = by_tensor[alias_root(alias, out)], by_tensor[out]
        root.first, root.last = min(root.first, bo.first), max(root.last, bo.last)
        if not isinstance(alias[out], View):
            root.size = max(root.size, bo.size)
    return [b for b in bufs if not (b.subgraph == 0 and b.tensor in alias)]


def build_buffers(
    model: TFLiteModel,
    order: Sequence[int] | None = None,
    *,
    scratch: bool = True,
    use_offline: bool = True,
    requests: ScratchRequests | None = None,
    alias: dict[int, int] | None = None,
) -> list[Buffer]:
    """Planned buffers with TFLM lifetimes for subgraph 0's operators run in ``order`` (default: file
    order); tensors of every subgraph first (subgraph, tensor index order), then scratch buffers
    (from ``requests``, default :func:`scratch_requests`)."""
    return _mark(model, order, scratch, use_offline, requests, alias)[0]


def op_timeline(buffers: Sequence[Buffer], spans: Sequence[tuple[int, int]]) -> list[int]:
    """Bytes live during each subgraph-0 operator (max over the scopes a control-flow op spans)."""
    n_scopes = max((e for _, e in spans), default=0)
    live = timeline(buffers, n_scopes)
    return [max(live[s - 1 : e]) for s, e in spans]


def timeline(buffers: Sequence[Buffer], n_ops: int) -> list[int]:
    """Bytes live at each operator position (scope 1..n_ops)."""
    live = [0] * n_ops
    for b in buffers:
        for s in range(max(b.first, 1), min(b.last, n_ops) + 1):
            live[s - 1] += b.size
    return live
