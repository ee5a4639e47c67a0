"""TFLite Micro's int8 SOFTMAX (int8 in, int8 out with scale 1/256 and zero point -128), bit for bit.

The arithmetic is gemmlowp's fixed point as TFLite Micro's reference kernel uses it
(``reference_ops::Softmax`` with ``kScaledDiffIntegerBits = 5``, ``kAccumulationIntegerBits = 12``);
docs/numerics.md ("Softmax") states the rule. Everything is computed on int64 NumPy arrays holding
int32 values; every intermediate is checked to stay in the int32 range the C code works in, so the
results equal runtime_c/nupes_softmax.c for every input.

Two places where TFLite Micro has no defined result get one here (and in the C kernel):

- a row whose sum of exponentials reaches 256.0 (only possible with >= 512 columns): TFLite Micro
  stops with ``TFLITE_CHECK(exponent <= 31)``; here the final division by ``2^exponent`` (32..34) is
  carried out exactly, which gives 0, i.e. an output of -128 for every element below 1/512;
- a sum of exponentials that would overflow int32 (>= 4096 columns): saturated to 2^31 - 1.
"""
from __future__ import annotations

import math

import numpy as np

from .fixedpoint import (
    INT32_MAX,
    INT32_MIN,
    rounding_divide_by_pot,
    saturating_rounding_doubling_high_mul,
)

SCALED_DIFF_INTEGER_BITS = 5  # the exp() input is Q5.26
ACCUMULATION_INTEGER_BITS = 12  # the sum of exponentials is Q12.19

# gemmlowp's constants (Q0.31 unless noted)
_EXP_MINUS_ONE_EIGHTH = 1895147668  # exp(-1/8)
_ONE_THIRD = 715827883  # 1/3
_EXP_BARREL = ((-2, 1672461947), (-1, 1302514674), (0, 790015084), (1, 290630308),  # exp(-2^E)
               (2, 39332535), (3, 720401), (4, 242))
_48_OVER_17 = 1515870810  # Q2.29
_NEG_32_OVER_17 = -1010580540  # Q2.29


def softmax_params(input_scale: float, beta: float = 1.0) -> tuple[int, int, int]:
    """(input_multiplier, input_left_shift, diff_min) exactly as TFLite Micro's Prepare computes them.

    ``input_scale`` and ``beta`` are float32 values in a .tflite file: they are rounded to float32
    first (a double 0.1 and the float32 0.1 give different multipliers), then multiplied in double,
    as ``PreprocessSoftmaxScaling(double(beta), double(scale), 5, ...)`` does:
    ``real = min(beta · scale · 2^26, 2^31 − 1)``, ``(input_multiplier, input_left_shift) =
    QuantizeMultiplierGreaterThanOne(real)`` and
    ``diff_min = −floor(31 · 2^26 / 2^input_left_shift)`` (``-CalculateInputRadius(5, shift)``).
    """
    s32 = float(np.float32(input_scale))
    b32 = float(np.float32(beta))
    if not (math.isfinite(s32) and math.isfinite(b32) and s32 > 0 and b32 > 0):
        raise ValueError(f"softmax needs a positive finite input scale and beta (got {input_scale}, {beta})")
    # A product of two float32 values is exact in double, and so is the power of two.
    real = min(b32 * s32 * float(1 << (31 - SCALED_DIFF_INTEGER_BITS)), float((1 << 31) - 1))
    if not real > 1.0:  # TFLite Micro: TFLITE_CHECK_GT(double_multiplier, 1.) stops the interpreter
        raise ValueError(f"softmax input scale · beta = {s32 * b32!r} is below 2^-26: TFLite Micro rejects it")
    # QuantizeMultiplier (double-rounding build): frexp, then round half away from zero.
    q, shift = math.frexp(real)
    q_fixed = math.floor(q * (1 << 31) + 0.5)  # q·2^31 has <= 22 fractional bits: + 0.5 is exact
    if q_fixed == 1 << 31:
        q_fixed //= 2
        shift += 1
    # real > 1 gives shift >= 1; real <= 2^31 - 1 gives shift <= 31 (31 only for beta·scale > 32,
    # where diff_min = 0 and only the row maximum is ever multiplied: by 0).
    radius = math.floor(((1 << SCALED_DIFF_INTEGER_BITS) - 1) * float(1 << (31 - SCALED_DIFF_INTEGER_BITS))
                        / float(1 << shift))
    return q_fixed, shift, -radius


def _i32(v: np.ndarray) -> np.ndarray:
    """Assert that v fits int32: what the C code (and TFLite's C++) computes without overflow."""
    if v.size and (v.min() < INT32_MIN or v.max() > INT32_MAX):
        raise AssertionError("int32 overflow in the softmax fixed-point arithmetic")
    return v


def _srdhm(a, b) -> np.ndarray:
    return saturating_rounding_doubling_high_mul(a, b)


def _saturating_mul_pot(x: np.ndarray, e: int) -> np.ndarray:
    """gemmlowp SaturatingRoundingMultiplyByPOT<e> for e > 0: x · 2^e, saturated to int32."""
    threshold = (1 << (31 - e)) - 1
    return np.where(x > threshold, INT32_MAX, np.where(x < -threshold, INT32_MIN, x << e))


def _exp_on_interval_between_negative_one_quarter_and_0_excl(a: np.ndarray) -> np.ndarray:
    """exp(a) for a in [-1/4, 0), Q0.31 in and out: a 4th-order Taylor series around -1/8."""
    x = _i32(a + (1 << 28))
    x2 = _srdhm(x, x)
    x3 = _srdhm(x2, x)
    x4 = _srdhm(x2, x2)
    x4_over_4 = rounding_divide_by_pot(x4, 2)
    poly = rounding_divide_by_pot(_i32(_srdhm(_i32(x4_over_4 + x3), _ONE_THIRD) + x2), 1)
    return _i32(_EXP_MINUS_ONE_EIGHTH + _srdhm(_EXP_MINUS_ONE_EIGHTH, _i32(x + poly)))


def exp_on_negative_values(a: np.ndarray) -> np.ndarray:
    """gemmlowp exp_on_negative_values for Q5.26 input a <= 0; Q0.31 output."""
    a = np.asarray(a, np.int64)
    quarter = 1 << (31 - SCALED_DIFF_INTEGER_BITS - 2)
    a_mod_quarter_minus_one_quarter = (a & (quarter - 1)) - quarter  # in [-1/4, 0)
    result = _exp_on_interval_between_negative_one_quarter_and_0_excl(
        _saturating_mul_pot(a_mod_quarter_minus_one_quarter, SCALED_DIFF_INTEGER_BITS))  # Rescale<0>
    remainder = _i32(a_mod_quarter_minus_one_quarter - a)  # a multiple of 1/4: its bits pick the factors
    for e, mult in _EXP_BARREL:
        bit = (remainder >> (31 - SCALED_DIFF_INTEGER_BITS + e)) & 1
        result = np.where(bit != 0, _srdhm(result, mult), result)
    return np.where(a == 0, INT32_MAX, result)  # exp(0) = One() of Q0.31


def one_over_one_plus_x_for_x_in_0_1(a: np.ndarray) -> np.ndarray:
    """gemmlowp's Newton-Raphson 1/(1 + a) for Q0.31 a in [0, 1); Q0.31 result (of 1/(1+a), in (1/2, 1])."""
    a = np.asarray(a, np.int64)
    s = a + INT32_MAX  # RoundingHalfSum(a, One()): s >= 0, so (s + 1) / 2 truncating = floor
    half_denominator = (s + 1) >> 1
    one_q2 = 1 << 29
    x = _i32(_48_OVER_17 + _srdhm(half_denominator, _NEG_32_OVER_17))  # Q2.29
    for _ in range(3):
        one_minus = _i32(one_q2 - _srdhm(half_denominator, x))
        x = _i32(x + _saturating_mul_pot(_srdhm(x, one_minus), 2))  # Rescale<2> of a Q4.27 product
    return _saturating_mul_pot(x, 1)  # ExactMulByPot<-1> then Rescale<0>


def _clz32(v: np.ndarray) -> np.ndarray:
    """Leading zeros of positive int32 values (as uint32)."""
    v = np.asarray(v, np.int64)
    n = np.zeros(v.shape, np.int64)
    for k in (16, 8, 4, 2, 1):
        small = v < (np.int64(1) << (32 - k - n))
        n = np.where(small, n + k, n)
    return n


def softmax_int8(x: np.ndarray, input_multiplier: int, input_left_shift: int, diff_min: int) -> np.ndarray:
    """TFLite Micro's int8 softmax over the last axis of ``x`` (int8); int8 result, same shape.

    The output is quantized with scale 1/256 and zero point -128. Parameters come from
    :func:`softmax_params`.
    """
    x = np.asarray(x)
    if x.dtype != np.int8:
        raise TypeError(f"softmax_int8 takes int8 input, got {x.dtype}")
    if x.ndim == 0 or x.shape[-1] == 0:
        raise ValueError(f"softmax_int8 needs a non-empty last axis, got shape {x.shape}")
    mult, shift, dmin = int(input_multiplier), int(input_left_shift), int(diff_min)
    if not (0 <= mult <= INT32_MAX and 0 <= shift <= 31 and -(1 << 31) <= dmin <= 0):
        raise ValueError(f"bad softmax parameters ({mult}, {shift}, {dmin})")
    rows = x.reshape(-1, x.shape[-1]).astype(np.int64)
    diff = rows - rows.max(axis=1, keepdims=True)  # in [-255, 0]
    used = diff >= dmin
    # MultiplyByQuantizedMultiplierGreaterThanOne on the used differences (|diff| · 2^shift < 2^31).
    scaled = _srdhm(_i32(np.where(used, diff, 0) << shift), mult)
    exps = exp_on_negative_values(scaled)  # Q0.31
    total = np.where(used, rounding_divide_by_pot(exps, ACCUMULATION_INTEGER_BITS), 0).sum(axis=1)  # Rescale<12>
    total = np.minimum(total, INT32_MAX)  # only reachable with >= 4096 columns (see the module doc)
    headroom_plus_one = _clz32(total)  # total >= 2^19: the row maximum contributes exp(0) = 1
    num_bits_over_unit = ACCUMULATION_INTEGER_BITS - headroom_plus_one
    shifted_sum_minus_one = ((total << headroom_plus_one) & 0xFFFFFFFF) - (1 << 31)
    recip = one_over_one_plus_x_for_x_in_0_1(shifted_sum_minus_one)  # Q0.31
    exponent = (num_bits_over_unit + 31 - 8)[:, None]  # 23..34; TFLite Micro stops above 31
    unsat = rounding_divide_by_pot(_srdhm(recip[:, None], exps), exponent)
    out = np.where(used, np.clip(unsat - 128, -128, 127), -128)
    return out.astype(np.int8).reshape(x.shape)
