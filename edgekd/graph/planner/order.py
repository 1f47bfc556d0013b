"""Operator re-ordering: exact search within a state budget, beam search, heuristics; the optimized plan."""

from __future__ import annotations

import os

from edgekd.graph.planner.lifetimes import (
    Plan,
    ScratchRequests,
    _as_model,
    _mark,
    align_up,
    build_buffers,
    op_timeline,
    scratch_requests,
)
from edgekd.graph.planner.placement import _realize_offline, best_placement, greedy_plan, tflm_greedy_place
from edgekd.graph.tflite_model import TFLiteModel

# ------------------------------------------------------------------------------------------------
# operator re-ordering
# ------------------------------------------------------------------------------------------------


class _Graph:
    """Dependency structure of the operators, with planned tensor sizes."""

    def __init__(self, m: TFLiteModel, requests: ScratchRequests | None = None) -> None:
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
        req = requests or scratch_requests
        self.scratch = [sum(align_up(s) for s in req(m, i, 0)) for i in range(self.n)]
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
    m: TFLiteModel, max_states: int = 20000, beam_width: int = 32, requests: ScratchRequests | None = None
) -> list[tuple[str, list[int]]]:
    """Operator orders worth evaluating: file order, the exact min-peak order (DFS with memoisation
    over executed-op sets, while there are at most ``max_states`` sets), else a beam search, and a
    greedy list-scheduling order."""
    n = len(m.operators)
    out: list[tuple[str, list[int]]] = [("file", list(range(n)))]
    if n == 0:
        return out
    g = _Graph(m, requests)
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
    requests: ScratchRequests | None = None,
    alias: dict[int, int] | None = None,
) -> Plan:
    """A plan never worse than :func:`greedy_plan`: best of several operator orders and placements.

    The head reported is what TFLM itself gets from :func:`apply_plan`'s file: re-ordered operators,
    plus (when ``needs_offline_offsets``) the tensor offsets stored as ``OfflineMemoryAllocation``
    metadata, with kernel scratch buffers still placed online by TFLM. ``method`` tells what won,
    e.g. ``"dfs-exact+tflm-greedy"`` or ``"file+size/best-fit"``. ``requests`` replaces TFLM's
    reference-kernel scratch buffers (e.g. by the C backend's own, see ``codegen.plan_arena``);
    ``alias`` maps outputs written in place to their input (one buffer, see ``merge_aliases``).
    """
    m = _as_model(model)
    base = greedy_plan(m, requests=requests, alias=alias)
    best = base
    has_offline = any(b.offline_offset >= 0 for b in base.buffers)
    orders = (
        candidate_orders(m, max_states, requests=requests)
        if reorder
        else [("file", list(range(len(m.operators))))]
    )
    for oname, order in orders:
        bufs, spans, _ = _mark(m, order, True, True, requests, alias)
        head = tflm_greedy_place(bufs)
        if head < best.head:
            best = Plan(bufs, list(order), head, op_timeline(bufs, spans), f"{oname}+tflm-greedy")
        if placement and not has_offline:
            trial = build_buffers(m, order, requests=requests, alias=alias)
            h, pname = best_placement(trial)
            if h < best.head:
                real, h_real = _realize_offline(trial)
                if h_real < best.head:
                    best = Plan(real, list(order), h_real, op_timeline(real, spans), f"{oname}+{pname}", True)
    if best is base:
        base.method = "tflm-greedy (no improvement found)"
    return best
