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

from edgekd.graph.planner.lifetimes import (
    ALIGN,
    OFFLINE_METADATA,
    Buffer,
    Plan,
    align_up,
    build_buffers,
    offline_offsets,
    op_timeline,
    scratch_requests,
    timeline,
)
from edgekd.graph.planner.order import candidate_orders, optimized_plan
from edgekd.graph.planner.placement import best_placement, greedy_plan, tflm_greedy_place
from edgekd.graph.planner.rewrite import apply_plan, reorder_model

__all__ = [
    "ALIGN",
    "OFFLINE_METADATA",
    "Buffer",
    "Plan",
    "align_up",
    "apply_plan",
    "best_placement",
    "build_buffers",
    "candidate_orders",
    "greedy_plan",
    "offline_offsets",
    "op_timeline",
    "optimized_plan",
    "reorder_model",
    "scratch_requests",
    "tflm_greedy_place",
    "timeline",
]
