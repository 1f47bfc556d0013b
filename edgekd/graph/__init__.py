"""Low-floor graph package: read ``.tflite`` flatbuffers, run/measure them with TFLite Micro, plan arenas.

Imports nothing from edgekd except :mod:`edgekd.errors` and :mod:`edgekd.atomic`. The heavy parts
(the TFLM interpreter) are imported lazily by the functions that need them.
"""

from __future__ import annotations

from edgekd.graph.tflite_model import Operator, Tensor, TFLiteModel, read_tflite
from edgekd.graph.tflm import check_tflm_loadable, measure_arena, run_tflm

__all__ = [
    "Operator",
    "TFLiteModel",
    "Tensor",
    "check_tflm_loadable",
    "measure_arena",
    "read_tflite",
    "run_tflm",
]
