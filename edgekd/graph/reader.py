""":func:`read_tflite`: parse a ``.tflite`` (:mod:`edgekd.graph.tflite_model`) and check it structurally
(:mod:`edgekd.graph.validate`), so that no runtime, planner or code generator sees an inconsistent model."""

from __future__ import annotations

import os

from edgekd.graph import validate as checks
from edgekd.graph.tflite_model import TFLiteModel, bytes_of, parse_tflite


def read_tflite(
    path_or_bytes: str | os.PathLike | bytes | bytearray | memoryview,
    *,
    validate: bool = True,
    source: str | None = None,
) -> TFLiteModel:
    """Parse a ``.tflite`` file (path) or its bytes. Raises EdgekdError for anything that is not one.

    ``source`` names the model in messages (default: the path, or ``<bytes>``).

    With ``validate`` (default) the model is also checked structurally (:mod:`edgekd.graph.validate`:
    indices, shapes, quantization, op parameters, sizes) so no runtime sees an inconsistent model.
    """
    data, source = bytes_of(path_or_bytes, source)
    model = parse_tflite(data, source)
    if validate:
        checks.validate_model(model)
    return model
