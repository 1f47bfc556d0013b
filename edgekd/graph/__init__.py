"""Low-floor graph package: read ``.tflite`` flatbuffers, run/measure them with TFLite Micro, plan arenas.

Imports nothing from edgekd except :mod:`edgekd.errors` and :mod:`edgekd.atomic`. The heavy parts
(the TFLM interpreter) are imported lazily by the functions that need them.
"""

from __future__ import annotations

from edgekd.graph.planner import Plan, apply_plan, greedy_plan, optimized_plan, reorder_model
from edgekd.graph.reader import read_tflite
from edgekd.graph.tflite_model import Operator, SubGraph, Tensor, TFLiteModel
from edgekd.graph.tflm import check_tflm_loadable, measure_arena, run_tflm, tflm_interpreter

__all__ = [
    "Operator",
    "Plan",
    "SubGraph",
    "apply_plan",
    "greedy_plan",
    "optimized_plan",
    "reorder_model",
    "tflm_interpreter",
    "TFLiteModel",
    "Tensor",
    "check_tflm_loadable",
    "measure_arena",
    "read_tflite",
    "run_tflm",
]
