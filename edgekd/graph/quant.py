"""The one float <-> integer rule for model inputs and outputs, as TFLite Micro applies it.

TFLite Micro's QUANTIZE kernel (``reference_ops::AffineQuantize``) computes, in float32,
``q = clamp(round(x / scale) + zero_point)`` where ``round`` is ``std::round`` (halves away from zero),
not numpy's round-half-to-even and not ``round(x / scale + zero_point)``. Every host-side quantization
of an input in edgekd (export checks, profile runtimes, TFLite Micro runs) goes through
:func:`quantize` so the int8 figures are those the microcontroller would see.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def round_half_away(v: np.ndarray) -> np.ndarray:
    """``std::round``: nearest integer, halves away from zero (exact in float32)."""
    t = np.trunc(v)
    return np.where(np.abs(v - t) >= 0.5, t + np.sign(v), t)


def quantize(x: np.ndarray, scale: float, zero_point: int, dtype: Any) -> np.ndarray:
    """Float -> ``dtype`` (int8/uint8/int16) with TFLite Micro's rule; float dtypes pass through."""
    dtype = np.dtype(dtype)
    if dtype.kind not in "iu" or not scale:
        return np.asarray(x).astype(dtype)
    v = np.asarray(x, dtype=np.float32) / np.float32(scale)
    info = np.iinfo(dtype)
    return np.clip(round_half_away(v) + int(zero_point), info.min, info.max).astype(dtype)


def dequantize(q: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    """Integer -> float32: ``(q - zero_point) * scale``; float arrays pass through as float32."""
    q = np.asarray(q)
    if q.dtype.kind in "iu" and scale:
        return ((q.astype(np.float32) - np.float32(zero_point)) * np.float32(scale)).astype(np.float32)
    return q.astype(np.float32)
