"""Placing buffers in the arena: TFLM's greedy first-fit (exact) and improved placements."""

from __future__ import annotations

import itertools
import os
import random
from collections.abc import Sequence

from edgekd.graph.planner.lifetimes import (
    Buffer,
    Plan,
    ScratchRequests,
    _as_model,
    _mark,
    op_timeline,
    timeline,
)
from edgekd.graph.tflite_model import TFLiteModel

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


def greedy_plan(
    model: TFLiteModel | bytes | str | os.PathLike,
    order: Sequence[int] | None = None,
    requests: ScratchRequests | None = None,
    alias: dict[int, int] | None = None,
) -> Plan:
    """TFLM's own plan for ``model`` (optionally with operators executed in ``order``, the scratch
    buffers of ``requests`` instead of TFLM's reference kernels', in-place outputs ``alias``)."""
    m = _as_model(model)
    bufs, spans, _ = _mark(m, order, True, True, requests, alias)
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
