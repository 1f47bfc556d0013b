"""TFLite Micro arena planning: an exact re-implementation of TFLM's GreedyMemoryPlanner and an
improved planner (operator re-ordering + better placement).

TFLM rules reproduced (``micro_allocation_info.cc``, ``greedy_memory_planner.cc``,
``micro_allocator.cc``):

* a tensor is planned when it has no constant buffer data, is not a variable, and has non-zero size;
* "allocation scopes": 0 is before the first operator, operator ``i`` runs at scope ``i + 1``;
  model inputs and outputs are created at scope 0; an operator's outputs are (re)created at its scope,
  its inputs and outputs are last used at its scope; model outputs are then kept to the last scope;
* scratch buffers a kernel requests in Prepare live exactly at that operator's scope and are added
  to the planner after all tensors (see :func:`scratch_requests` for the kernels modelled);
* sizes are rounded up to 16 bytes; offline-planned offsets (metadata ``OfflineMemoryAllocation``)
  are placed first, unsorted; the online buffers are added in reverse order and stable-sorted by
  size, largest first; each goes at the lowest offset that fits between the buffers already placed
  that overlap it in time (first-fit in the offset-ordered list);
* the arena head equals the plan's maximum ``offset + size``.
"""

from __future__ import annotations

import itertools
import os
import random
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from edgekd.errors import EdgekdError
from edgekd.graph.tflite_model import TFLiteModel, read_tflite

ALIGN = 16
OFFLINE_METADATA = "OfflineMemoryAllocation"


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
    model: TFLiteModel, order: Sequence[int] | None, scratch: bool, use_offline: bool
) -> tuple[list[Buffer], list[tuple[int, int]], int]:
    """TFLM's AllocationInfoBuilder: buffers with lifetimes, each subgraph-0 op's scope span, and
    the number of scopes. Control-flow ops open one nested scope per subgraph they call."""
    sgs = _subgraphs(model)
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
                for nbytes in scratch_requests(model, oi, sgi):
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
    return bufs + [b for _, b in scratch_reqs], spans, scope


def build_buffers(
    model: TFLiteModel,
    order: Sequence[int] | None = None,
    *,
    scratch: bool = True,
    use_offline: bool = True,
) -> list[Buffer]:
    """Planned buffers with TFLM lifetimes for subgraph 0's operators run in ``order`` (default: file
    order); tensors of every subgraph first (subgraph, tensor index order), then scratch buffers."""
    return _mark(model, order, scratch, use_offline)[0]


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


# ------------------------------------------------------------------------------------------------
# TFLM greedy placement (exact)
# ------------------------------------------------------------------------------------------------


def _first_fit(placed: list[Buffer], b: Buffer) -> int:
    """Lowest offset between time-overlapping placed buffers (``placed`` is offset-ordered)."""
    candidate = 0
    for e in placed:
        if not e.overlaps(b):
            continue
        if e.offset - candidate >= b.size:
            break
        candidate = max(candidate, e.offset + e.size)
    return candidate


def _insert(placed: list[Buffer], b: Buffer) -> None:
    """Insert keeping TFLM's list order: before the first entry with a larger offset."""
    if placed and placed[0].offset > b.offset:
        placed.insert(0, b)
        return
    for k in range(1, len(placed)):
        if placed[k].offset > b.offset:
            placed.insert(k, b)
            return
    placed.append(b)


def tflm_greedy_place(buffers: list[Buffer]) -> int:
    """Assign ``offset`` to every buffer exactly as TFLM's GreedyMemoryPlanner does; return the head."""
    if not buffers:
        return 0
    offline = [b for b in buffers if b.offline_offset >= 0]
    online = [b for b in buffers if b.offline_offset < 0]
    online.reverse()  # TFLM fills online entries from the back of its array
    online.sort(key=lambda b: -b.size)  # stable, like its bubble sort
    seq = offline + online
    placed: list[Buffer] = []
    for k, b in enumerate(seq):
        if b.offline_offset >= 0:
            b.offset = b.offline_offset
        elif k == 0:
            b.offset = 0
        else:
            b.offset = _first_fit(placed, b)
        _insert(placed, b)
    return max(b.offset + b.size for b in buffers)


def greedy_plan(model: TFLiteModel | bytes | str | os.PathLike, order: Sequence[int] | None = None) -> Plan:
    """TFLM's own plan for ``model`` (optionally with operators executed in ``order``)."""
    m = _as_model(model)
    bufs, spans, _ = _mark(m, order, True, True)
    head = tflm_greedy_place(bufs)
    ordr = list(range(len(m.operators))) if order is None else list(order)
    return Plan(bufs, ordr, head, op_timeline(bufs, spans), "tflm-greedy")


# ------------------------------------------------------------------------------------------------
# improved placement
# ------------------------------------------------------------------------------------------------


def _place_in_order(buffers: list[Buffer], seq: list[Buffer], best_fit: bool) -> int:
    """Place ``seq`` one by one (first-fit or best-fit among gaps) ignoring offline offsets."""
    placed: list[Buffer] = []
    for b in seq:
        over = sorted((e for e in placed if e.overlaps(b)), key=lambda e: e.offset)
        cand, best, best_gap = 0, None, None
        for e in over:
            gap = e.offset - cand
            if gap >= b.size:
                if not best_fit:
                    best = cand
                    break
                if best_gap is None or gap < best_gap:
                    best, best_gap = cand, gap
            cand = max(cand, e.offset + e.size)
        b.offset = cand if best is None else best
        placed.append(b)
    return max((b.offset + b.size for b in buffers), default=0)


_PLACEMENT_KEYS = {
    "size": lambda b: (-b.size, b.first),
    "size-lifetime": lambda b: (-b.size * (b.last - b.first + 1), -b.size),
    "lifetime": lambda b: (-(b.last - b.first), -b.size),
    "first-use": lambda b: (b.first, -b.size),
}


def best_placement(buffers: list[Buffer], random_tries: int = 48, seed: int = 0) -> tuple[int, str]:
    """Try several placement orders (first-fit and best-fit, plus seeded random perturbations of the
    size order) and TFLM's own; leave the offsets of the best in ``buffers``; return (head, name)."""
    if not buffers:
        return 0, "empty"
    lower = max(timeline(buffers, max(b.last for b in buffers) + 1), default=0)
    head = tflm_greedy_place(buffers)
    best = (head, "tflm-greedy", [b.offset for b in buffers])
    trials: list[tuple[str, list[Buffer], bool]] = []
    for (kname, key), best_fit in itertools.product(_PLACEMENT_KEYS.items(), (False, True)):
        trials.append((f"{kname}/{'best' if best_fit else 'first'}-fit", sorted(buffers, key=key), best_fit))
    rng = random.Random(seed)
    for k in range(random_tries):
        jitter = {id(b): rng.uniform(0.7, 1.3) for b in buffers}
        trials.append((f"random{k}/first-fit", sorted(buffers, key=lambda b: -b.size * jitter[id(b)]), False))
    for name, seq, best_fit in trials:
        if best[0] <= lower:
            break
        h = _place_in_order(buffers, seq, best_fit)
        if h < best[0]:
            best = (h, name, [b.offset for b in buffers])
    for b, o in zip(buffers, best[2], strict=True):
        b.offset = o
    return best[0], best[1]


def _realize_offline(buffers: list[Buffer]) -> tuple[list[Buffer], int]:
    """What TFLM does with these tensor offsets given as offline offsets (scratch stays online)."""
    out = [
        Buffer(
            b.tensor, b.size, b.first, b.last, b.offset if b.tensor >= 0 else -1, b.op, b.name, -1, b.subgraph
        )
        for b in buffers
    ]
    return out, tflm_greedy_place(out)


# ------------------------------------------------------------------------------------------------
# operator re-ordering
# ------------------------------------------------------------------------------------------------


class _Graph:
    """Dependency structure of the operators, with planned tensor sizes."""

    def __init__(self, m: TFLiteModel) -> None:
        self.m = m
        self.n = len(m.operators)
        planned = {
            b.tensor: b.size for b in build_buffers(m, scratch=False, use_offline=False) if b.subgraph == 0
        }
        self.size = planned
        producer: dict[int, int] = {}
        for o in m.operators:
            for t in o.outputs:
                producer[t] = o.index
        self.preds: list[int] = [0] * self.n  # bitmask of ops that must run before
        self.consumers: dict[int, int] = {t: 0 for t in planned}
        for o in m.operators:
            for t in o.inputs:
                if t >= 0 and t in producer:
                    self.preds[o.index] |= 1 << producer[t]
                if t in self.consumers:
                    self.consumers[t] |= 1 << o.index
        self.outputs = set(m.outputs)
        self.inputs = set(m.inputs)
        self.scratch = [sum(align_up(s) for s in scratch_requests(m, i)) for i in range(self.n)]
        self.op_in = [[t for t in set(o.inputs) if t in planned] for o in m.operators]
        self.op_out = [[t for t in set(o.outputs) if t in planned] for o in m.operators]

        # per planned tensor: size, producer bit (0 for model inputs: always made), consumers mask
        self.tensors = [t for t in planned if t in producer or t in self.inputs]
        self.t_size = [planned[t] for t in self.tensors]
        self.t_prod = [0 if t in self.inputs or t not in producer else 1 << producer[t] for t in self.tensors]
        self.t_cons = [self.consumers[t] for t in self.tensors]
        self.t_out = [t in self.outputs for t in self.tensors]
        pos = {t: k for k, t in enumerate(self.tensors)}
        self.op_touch = [0] * self.n  # bitmask over self.tensors of the op's inputs and outputs
        for o in range(self.n):
            for t in self.op_in[o] + self.op_out[o]:
                if t in pos:
                    self.op_touch[o] |= 1 << pos[t]

    def _live_mask(self, done: int) -> int:
        mask = 0
        for k in range(len(self.tensors)):
            made = self.t_prod[k] == 0 or (done & self.t_prod[k])
            if made and (self.t_out[k] or (self.t_cons[k] & ~done)):
                mask |= 1 << k
        return mask

    def _bytes(self, mask: int) -> int:
        return sum(sz for k, sz in enumerate(self.t_size) if mask >> k & 1)

    def live_after(self, done: int) -> int:
        """Bytes live between operators once the ops in ``done`` have run."""
        return self._bytes(self._live_mask(done))

    def step_peak(self, done: int, op: int) -> int:
        """Bytes live while ``op`` runs after ``done``: everything alive, plus its outputs and scratch."""
        return self._bytes(self._live_mask(done) | self.op_touch[op]) + self.scratch[op]


def _exact_order(g: _Graph, max_states: int) -> list[int] | None:
    """Order minimising the peak of live bytes, by DFS over executed-op sets with memoisation."""
    full = (1 << g.n) - 1
    memo: dict[int, tuple[int, int]] = {}

    def solve(done: int) -> int:
        if done == full:
            return 0
        hit = memo.get(done)
        if hit is not None:
            return hit[0]
        if len(memo) > max_states:
            raise _TooBig
        best, best_op = None, -1
        for op in range(g.n):
            if done >> op & 1 or (g.preds[op] & ~done):
                continue
            here = g.step_peak(done, op)
            if best is not None and here >= best:
                continue
            v = max(here, solve(done | 1 << op))
            if best is None or v < best:
                best, best_op = v, op
        memo[done] = (best if best is not None else 0, best_op)
        return memo[done][0]

    try:
        solve(0)
    except _TooBig:
        return None
    order, done = [], 0
    while done != full:
        op = memo[done][1]
        order.append(op)
        done |= 1 << op
    return order


class _TooBig(Exception):
    pass


def _heuristic_order(g: _Graph) -> list[int]:
    """Greedy list scheduling: run the ready op with the lowest peak, ties to the one freeing most."""
    done, order = 0, []
    full = (1 << g.n) - 1
    while done != full:
        ready = [op for op in range(g.n) if not done >> op & 1 and not (g.preds[op] & ~done)]
        op = min(ready, key=lambda o: (g.step_peak(done, o), g.live_after(done | 1 << o), o))
        order.append(op)
        done |= 1 << op
    return order


def _beam_order(g: _Graph, width: int) -> list[int]:
    """Beam search over executed-op sets: keep the ``width`` prefixes with the lowest (peak so far,
    bytes live now); prefixes reaching the same set are merged (same future), keeping the best."""
    beam: list[tuple[int, int, int, list[int]]] = [(0, 0, 0, [])]  # (peak, live, done, order)
    for _ in range(g.n):
        cand: dict[int, tuple[int, int, int, list[int]]] = {}
        for peak, _live, done, order in beam:
            for op in range(g.n):
                if done >> op & 1 or (g.preds[op] & ~done):
                    continue
                nd = done | 1 << op
                entry = (max(peak, g.step_peak(done, op)), g.live_after(nd), nd, [*order, op])
                old = cand.get(nd)
                if old is None or entry[:2] < old[:2]:
                    cand[nd] = entry
        beam = sorted(cand.values(), key=lambda e: e[:2])[:width]
    return beam[0][3]


def candidate_orders(
    m: TFLiteModel, max_states: int = 20000, beam_width: int = 32
) -> list[tuple[str, list[int]]]:
    """Operator orders worth evaluating: file order, the exact min-peak order (DFS with memoisation
    over executed-op sets, while there are at most ``max_states`` sets), else a beam search, and a
    greedy list-scheduling order."""
    n = len(m.operators)
    out: list[tuple[str, list[int]]] = [("file", list(range(n)))]
    if n == 0:
        return out
    g = _Graph(m)
    exact = _exact_order(g, max_states) if n <= 512 else None
    if exact is not None:
        out.append(("dfs-exact", exact))
    elif n <= 1024:
        out.append((f"beam{beam_width}", _beam_order(g, beam_width)))
    out.append(("heuristic", _heuristic_order(g)))
    return out


def optimized_plan(
    model: TFLiteModel | bytes | str | os.PathLike,
    *,
    reorder: bool = True,
    placement: bool = True,
    max_states: int = 20000,
) -> Plan:
    """A plan never worse than :func:`greedy_plan`: best of several operator orders and placements.

    The head reported is what TFLM itself gets from :func:`apply_plan`'s file: re-ordered operators,
    plus (when ``needs_offline_offsets``) the tensor offsets stored as ``OfflineMemoryAllocation``
    metadata, with kernel scratch buffers still placed online by TFLM. ``method`` tells what won,
    e.g. ``"dfs-exact+tflm-greedy"`` or ``"file+size/best-fit"``.
    """
    m = _as_model(model)
    base = greedy_plan(m)
    best = base
    has_offline = any(b.offline_offset >= 0 for b in base.buffers)
    orders = candidate_orders(m, max_states) if reorder else [("file", list(range(len(m.operators))))]
    for oname, order in orders:
        bufs, spans, _ = _mark(m, order, True, True)
        head = tflm_greedy_place(bufs)
        if head < best.head:
            best = Plan(bufs, list(order), head, op_timeline(bufs, spans), f"{oname}+tflm-greedy")
        if placement and not has_offline:
            trial = build_buffers(m, order)
            h, pname = best_placement(trial)
            if h < best.head:
                real, h_real = _realize_offline(trial)
                if h_real < best.head:
                    best = Plan(real, list(order), h_real, op_timeline(real, spans), f"{oname}+{pname}", True)
    if best is base:
        base.method = "tflm-greedy (no improvement found)"
    return best


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
