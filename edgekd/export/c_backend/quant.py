"""TFLite (Micro) quantisation parameter arithmetic, reproduced exactly in Python: the double-precision
``QuantizeMultiplier`` and the activation ranges (``std::round`` is :mod:`edgekd.graph.quant`'s)."""

from __future__ import annotations

import math

import numpy as np

from edgekd.graph.quant import quantize, round_half_away

FUSED_ACTIVATIONS = {0: "NONE", 1: "RELU", 2: "RELU_N1_TO_1", 3: "RELU6"}


def quantize_multiplier(m: float) -> tuple[int, int]:
    """TFLite ``QuantizeMultiplier`` (double rounding build): ``m ~= q * 2**(shift - 31)``."""
    if m == 0.0:
        return 0, 0
    q, shift = math.frexp(m)
    q_fixed = int(round_half_away(np.float64(q * (1 << 31))))
    if q_fixed == (1 << 31):
        q_fixed //= 2
        shift += 1
    if shift < -31:
        shift, q_fixed = 0, 0
    return int(q_fixed), int(shift)


def _quantize_f32(scale: float, zp: int, f: float) -> int:
    """TFLite ``Quantize`` helper: float32 division, then ``std::round`` (:func:`edgekd.graph.quant.quantize`)."""
    return int(quantize(np.float32(f), scale, zp, np.int32))


def activation_range(fused: int, scale: float, zp: int, qmin: int = -128, qmax: int = 127) -> tuple[int, int]:
    """``CalculateActivationRangeQuantized`` for a fused activation code."""
    name = FUSED_ACTIVATIONS.get(fused)
    if name is None:
        raise ValueError(f"fused activation {fused}")
    if name == "RELU":
        return max(qmin, _quantize_f32(scale, zp, 0.0)), qmax
    if name == "RELU6":
        return max(qmin, _quantize_f32(scale, zp, 0.0)), min(qmax, _quantize_f32(scale, zp, 6.0))
    if name == "RELU_N1_TO_1":
        return max(qmin, _quantize_f32(scale, zp, -1.0)), min(qmax, _quantize_f32(scale, zp, 1.0))
    return qmin, qmax


def same_padding(in_size: int, filt: int, stride: int, dilation: int, out_size: int) -> int:
    """TFLite ``ComputePaddingWithOffset``'s leading padding."""
    eff = (filt - 1) * dilation + 1
    total = max(0, (out_size - 1) * stride + eff - in_size)
    return total // 2
