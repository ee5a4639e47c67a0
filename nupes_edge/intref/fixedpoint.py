"""TFLite's fixed-point requantization primitives, vectorized over int64 NumPy arrays.

These are the gemmlowp / TFLite reference functions (the "double rounding" variant that TFLite
Micro's reference kernels use): QuantizeMultiplier, SaturatingRoundingDoublingHighMul,
RoundingDivideByPOT, MultiplyByQuantizedMultiplier. Results equal the C versions on int32.
"""
from __future__ import annotations

import math

import numpy as np

INT32_MIN, INT32_MAX = -(1 << 31), (1 << 31) - 1


def quantize_multiplier(real: float) -> tuple[int, int]:
    """real ≈ multiplier · 2^(shift - 31), multiplier in [2^30, 2^31) (TFLite QuantizeMultiplier)."""
    if real == 0.0:
        return 0, 0
    if real < 0:
        raise ValueError(f"negative multiplier {real}")
    q, shift = math.frexp(real)
    q_fixed = int(math.floor(q * (1 << 31) + 0.5))
    if q_fixed == (1 << 31):
        q_fixed //= 2
        shift += 1
    if shift < -31:
        return 0, 0
    if shift > 30:
        return INT32_MAX, 30
    return q_fixed, shift


def _div_pow2_trunc(x: np.ndarray, e: int) -> np.ndarray:
    """x / 2^e rounded toward zero, like C integer division."""
    return np.where(x >= 0, x >> e, -((-x) >> e))


def saturating_rounding_doubling_high_mul(a, b) -> np.ndarray:
    a = np.asarray(a, np.int64)
    b = np.asarray(b, np.int64)
    overflow = (a == b) & (a == INT32_MIN)
    ab = a * b
    nudge = np.where(ab >= 0, 1 << 30, 1 - (1 << 30))
    res = _div_pow2_trunc(ab + nudge, 31)
    return np.where(overflow, INT32_MAX, res)


def rounding_divide_by_pot(x, exponent) -> np.ndarray:
    x = np.asarray(x, np.int64)
    e = np.asarray(exponent, np.int64)
    mask = (np.int64(1) << e) - 1
    remainder = x & mask
    threshold = (mask >> 1) + (x < 0)
    return (x >> e) + (remainder > threshold)


def multiply_by_quantized_multiplier(x, multiplier, shift) -> np.ndarray:
    """round(x · multiplier · 2^(shift-31)) with TFLite's two roundings; x, result int32 range."""
    shift = np.asarray(shift, np.int64)
    left = np.maximum(shift, 0)
    right = np.maximum(-shift, 0)
    x = np.asarray(x, np.int64) * (np.int64(1) << left)
    return rounding_divide_by_pot(saturating_rounding_doubling_high_mul(x, multiplier), right)
