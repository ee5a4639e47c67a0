"""TFLite Micro's int8 LOGISTIC, TANH, HARD_SWISH and LEAKY_RELU as 256-entry lookup tables, bit for bit.

Each function returns the int8 output of the kernel for every possible int8 input: entry ``q + 128``
is the output for input ``q``. The table is computed here with the kernel's own integer arithmetic
(TFLite Micro's Prepare, then its int8 Eval applied to each of the 256 inputs), so a kernel that
looks the input up in the table is exact by construction. No interpreter is involved;
tests/test_lut_ops.py compares the tables with the TFLite Micro interpreter.

The rules, stated in docs/numerics.md ("Elementwise activations (int8 tables)"):

- Scales are the file's float32 values: every scale (and LeakyRelu's alpha) is rounded to float32
  first, then combined in double. That is what the TFLite Micro of the pinned ``tflite-micro``
  wheel (0.dev20261023182759, commit 8f6596d) computes, checked bit for bit. Beware: the
  tflite-micro sources of August 2026 (commit 90b983c) divide the scales in float32 for
  HARD_SWISH's output multiplier and LEAKY_RELU's two multipliers (``double(a / b)`` with float
  a, b); that differs in the last bit of the multiplier, which changes single outputs by one LSB
  (e.g. LEAKY_RELU with input scale 1/512 and output scale 0.05).
- LOGISTIC, TANH: ``x = q − in_zp`` is taken to Q4.27 by ``MultiplyByQuantizedMultiplier`` with
  ``(mult, shift) = frexp(in_scale · 2^27)`` (no cap on the shift), and inputs at or beyond the
  radius ``floor(15 · 2^27 / 2^shift)`` saturate. In between, gemmlowp's ``logistic`` / ``tanh``
  of the Q4.27 value gives a Q0.31 result, rounded to 1/256 (logistic, minus 128) or 1/128 (tanh).
- HARD_SWISH: the int16 fixed-point arithmetic of TFLite's reference kernel, including gemmlowp's
  int16 ``RoundingDivideByPOT`` for exponents of 16 and more (its mask then wraps to −1, and the
  result is +1 for every input ≥ 0 and −1 below), and int16 wrap-around where the C++ assigns to
  ``int16_t``.
- LEAKY_RELU: ``zp_out + MBQM(x, identity)`` for ``x ≥ 0``, ``zp_out ± MBQM(x, |alpha|)`` below.

The intermediate values are int64 NumPy arrays holding int32 (or int16) values.
"""
from __future__ import annotations

import math

import numpy as np

from .fixedpoint import (
    INT32_MAX,
    multiply_by_quantized_multiplier,
    quantize_multiplier,
    rounding_divide_by_pot,
    saturating_rounding_doubling_high_mul,
)
from .softmax import (
    _48_OVER_17,
    _EXP_BARREL,
    _NEG_32_OVER_17,
    _exp_on_interval_between_negative_one_quarter_and_0_excl,
    _saturating_mul_pot,
    one_over_one_plus_x_for_x_in_0_1,
)

# The int8 output quantizations TFLite requires of these two operators (scale, zero point).
OUTPUT_QUANT = {"logistic": (1.0 / 256, -128), "tanh": (1.0 / 128, 0)}

INPUTS = np.arange(-128, 128, dtype=np.int64)  # table index i holds the output for input i - 128

_INPUT_INTEGER_BITS = 4  # LOGISTIC and TANH take their input in Q4.27


# ----------------------------------------------------------------------------------------- checks

def _f32(value: float, what: str) -> float:
    """A positive finite value, rounded to float32 as it is stored in a .tflite file."""
    v = float(np.float32(value))
    if not (math.isfinite(v) and v > 0):
        raise ValueError(f"{what} must be a positive finite float32 value, got {value!r}")
    return v


def _zero_point(zp: int, what: str) -> int:
    if int(zp) != zp or not -128 <= int(zp) <= 127:
        raise ValueError(f"{what} must be an integer in [-128, 127], got {zp!r}")
    return int(zp)


def _check_fixed_output(op: str, out_scale: float, out_zp: int) -> None:
    scale, zp = OUTPUT_QUANT[op]
    if float(np.float32(out_scale)) != scale or out_zp != zp:
        raise ValueError(f"an int8 {op.upper()} output must be quantized with scale 1/{round(1 / scale)} and zero "
                         f"point {zp} (TFLite's rule for int8 {op}), not scale {out_scale!r}, zero point {out_zp!r}")


def _table(values: np.ndarray) -> np.ndarray:
    assert values.shape == (256,) and values.min() >= -128 and values.max() <= 127
    return values.astype(np.int8)


# ------------------------------------------------------------------------ gemmlowp, int32 (Q formats)

def exp_on_negative_values(a, integer_bits: int) -> np.ndarray:
    """gemmlowp ``exp_on_negative_values`` of a Q(integer_bits) value a <= 0; Q0.31 result.

    (nupes_edge.intref.softmax.exp_on_negative_values is the same function for 5 integer bits.)
    """
    a = np.asarray(a, np.int64)
    frac = 31 - integer_bits
    quarter = 1 << (frac - 2)
    a_mod_quarter_minus_one_quarter = (a & (quarter - 1)) - quarter  # in [-1/4, 0)
    x = a_mod_quarter_minus_one_quarter
    if integer_bits > 0:
        x = _saturating_mul_pot(x, integer_bits)  # Rescale<0>
    result = _exp_on_interval_between_negative_one_quarter_and_0_excl(x)
    remainder = a_mod_quarter_minus_one_quarter - a  # a multiple of 1/4, >= 0
    for e, mult in _EXP_BARREL:
        if integer_bits > e:
            bit = (remainder >> (frac + e)) & 1
            result = np.where(bit != 0, saturating_rounding_doubling_high_mul(result, mult), result)
    if integer_bits > 5:  # exp(x) = 0 below -32
        result = np.where(a < -(1 << (36 - integer_bits)), 0, result)
    return np.where(a == 0, INT32_MAX, result)


def one_minus_x_over_one_plus_x_for_x_in_0_1(a) -> np.ndarray:
    """gemmlowp's (1 - a)/(1 + a) for Q0.31 a in [0, 1]: the Newton-Raphson of
    ``one_over_one_plus_x_for_x_in_0_1`` (Q2.29), then ``Rescale<0>(x - 1)``."""
    a = np.asarray(a, np.int64)
    srdhm = saturating_rounding_doubling_high_mul
    half_denominator = (a + INT32_MAX + 1) >> 1  # RoundingHalfSum(a, One()), a >= 0
    one_q2 = 1 << 29
    x = _48_OVER_17 + srdhm(half_denominator, _NEG_32_OVER_17)
    for _ in range(3):
        x = x + _saturating_mul_pot(srdhm(x, one_q2 - srdhm(half_denominator, x)), 2)
    return _saturating_mul_pot(x - one_q2, 2)


def logistic_q0(a) -> np.ndarray:
    """gemmlowp ``logistic`` of a Q4.27 value; Q0.31 result."""
    a = np.asarray(a, np.int64)
    positive = a > 0
    abs_input = np.where(positive, a, -a)
    if_positive = one_over_one_plus_x_for_x_in_0_1(exp_on_negative_values(-abs_input, _INPUT_INTEGER_BITS))
    if_negative = INT32_MAX - if_positive  # One() - result
    return np.where(a == 0, 1 << 30, np.where(positive, if_positive, if_negative))


def tanh_q0(a) -> np.ndarray:
    """gemmlowp ``tanh`` of a Q4.27 value; Q0.31 result.

    ``neg_tanh_on_negative_values(n) = one_minus_x_over_one_plus_x(exp_on_negative_values(2n))``,
    where 2n is ``ExactMulByPot<1>``: the same raw value read as Q5.26.
    """
    a = np.asarray(a, np.int64)
    negative = a < 0
    n = np.where(negative, a, -a)
    t = one_minus_x_over_one_plus_x_for_x_in_0_1(exp_on_negative_values(n, _INPUT_INTEGER_BITS + 1))
    return np.where(a == 0, 0, np.where(negative, -t, t))


# ------------------------------------------------------------------------------- LOGISTIC and TANH

def q4_input_params(in_scale: float) -> tuple[int, int, int]:
    """(input_multiplier, input_left_shift, input_range_radius) as TFLite Micro's LOGISTIC/TANH Prepare.

    ``frexp(double(in_scale) · 2^27)`` (exact: a float32 times a power of two), the multiplier
    ``round(q · 2^31)`` (exact too: q has 24 significant bits, so it never rounds up to 2^31), and
    ``CalculateInputRadius(4, shift, 31) = floor(15 · 2^27 / 2^shift)``.
    """
    s = _f32(in_scale, "the input scale")
    q, shift = math.frexp(s * float(1 << (31 - _INPUT_INTEGER_BITS)))
    if not 0 <= shift <= 62:  # TFLite Micro computes 1LL << shift: undefined outside [0, 63)
        raise ValueError(f"input scale {s!r} is outside [2^-28, 2^35): TFLite Micro's input radius is undefined")
    mult = math.floor(q * (1 << 31) + 0.5)
    radius = ((2 ** _INPUT_INTEGER_BITS - 1) << (31 - _INPUT_INTEGER_BITS)) >> shift
    return mult, shift, radius


def _q4_table(in_scale: float, in_zp: int, fn, out_shift: int, out_offset: int) -> np.ndarray:
    mult, shift, radius = q4_input_params(in_scale)
    x = INPUTS - _zero_point(in_zp, "the input zero point")
    inside = (x > -radius) & (x < radius)  # |x| < radius: |x| · 2^shift < 15 · 2^27, no int32 overflow
    q4 = multiply_by_quantized_multiplier(np.where(inside, x, 0), mult, shift)
    y = np.clip(rounding_divide_by_pot(fn(q4), out_shift) + out_offset, -128, 127)
    return _table(np.where(x <= -radius, -128, np.where(x >= radius, 127, y)))


def logistic_table(in_scale: float, in_zp: int, out_scale: float, out_zp: int) -> np.ndarray:
    """TFLite Micro's int8 LOGISTIC for every int8 input: int8 array of 256, index = input + 128.

    The output must be quantized with scale 1/256 and zero point -128 (ValueError otherwise).
    """
    _check_fixed_output("logistic", out_scale, out_zp)
    return _q4_table(in_scale, in_zp, logistic_q0, 31 - 8, -128)


def tanh_table(in_scale: float, in_zp: int, out_scale: float, out_zp: int) -> np.ndarray:
    """TFLite Micro's int8 TANH for every int8 input: int8 array of 256, index = input + 128.

    The output must be quantized with scale 1/128 and zero point 0 (ValueError otherwise).
    """
    _check_fixed_output("tanh", out_scale, out_zp)
    return _q4_table(in_scale, in_zp, tanh_q0, 31 - 7, 0)


# ------------------------------------------------------------------------------------- HARD_SWISH

def _wrap16(v) -> np.ndarray:
    """The int16 value of an integer (two's complement wrap-around, as an assignment to int16_t)."""
    return ((np.asarray(v, np.int64) + (1 << 15)) & 0xFFFF) - (1 << 15)


def _trunc_div_pow2(v: np.ndarray, e: int) -> np.ndarray:
    return np.where(v >= 0, v >> e, -((-v) >> e))


def _srdhm16(a, b) -> np.ndarray:
    """gemmlowp SaturatingRoundingDoublingHighMul on int16."""
    a, b = np.asarray(a, np.int64), np.asarray(b, np.int64)
    ab = a * b
    res = _wrap16(_trunc_div_pow2(ab + np.where(ab >= 0, 1 << 14, 1 - (1 << 14)), 15))
    return np.where((a == b) & (a == -(1 << 15)), (1 << 15) - 1, res)


def _sdhm16(a, b) -> np.ndarray:
    """TFLite's SaturatingDoublingHighMul on int16: as above but truncating (no rounding nudge)."""
    a, b = np.asarray(a, np.int64), np.asarray(b, np.int64)
    res = _wrap16(_trunc_div_pow2(a * b, 15))
    return np.where((a == b) & (a == -(1 << 15)), (1 << 15) - 1, res)


def _rdbpot16(x, exponent: int) -> np.ndarray:
    """gemmlowp RoundingDivideByPOT<int16_t>(x, exponent), exponent in [0, 31].

    The mask ``(1 << exponent) - 1`` is converted to int16: from exponent 16 on it is -1, so the
    remainder is x itself and the threshold -1 (x >= 0) or 0 (x < 0): the result is then +1 for
    x >= 0 (even 0) and -1 for x < 0.
    """
    x = np.asarray(x, np.int64)
    mask = int(_wrap16((1 << exponent) - 1))
    remainder = x & mask
    threshold = (mask >> 1) + (x < 0)
    return _wrap16((x >> exponent) + (remainder > threshold))


def _sat_lshift16(x: np.ndarray, amount: int) -> np.ndarray:
    return np.clip(x * (1 << amount), -(1 << 15), (1 << 15) - 1)


def _downscale_to_int16(m: int) -> int:
    """TFLite DownScaleInt32ToInt16Multiplier."""
    return (1 << 15) - 1 if m >= INT32_MAX - (1 << 15) else (m + (1 << 15)) >> 16


def _tflm_quantize_multiplier(real: float, what: str) -> tuple[int, int]:
    """TFLite's QuantizeMultiplier (no cap on the shift in TFLite Micro's double-rounding build)."""
    if real >= 2.0 ** 29:
        raise ValueError(f"{what} {real!r} is too large (>= 2^29) for TFLite's int32 arithmetic")
    return quantize_multiplier(real)


def hard_swish_params(in_scale: float, out_scale: float) -> tuple[int, int, int, int]:
    """(output_multiplier_int16, output_exponent, reluish_multiplier_int16, reluish_exponent) as
    TFLite Micro's HARD_SWISH Prepare computes them.

    ``hires = in_scale / 128`` (exact), ``out = hires / out_scale`` (double division of the float32
    values; a float32 division gives different results, see the module doc) and
    ``reluish = hires / (3/32768)`` (float32 or double give the same int16 multiplier here: the
    quotient's bits beyond float32 precision repeat 01, so they never sit on a rounding tie); each
    is QuantizeMultiplier'ed and reduced to int16 by ``DownScaleInt32ToInt16Multiplier``
    (``(m + 2^15) >> 16``, 32767 from ``m >= 2^31 − 1 − 2^15``). TFLite Micro requires
    ``output_exponent <= 0``, i.e. ``in_scale / out_scale < 128`` (a little less: a multiplier that
    rounds up to 2^31 raises the exponent).
    """
    s_in, s_out = _f32(in_scale, "the input scale"), _f32(out_scale, "the output scale")
    hires = s_in / 128.0  # (1.0f / 128.0f) * input_scale: exact in float32 and in double
    out_real = hires / s_out  # double division of the two float32 values (see the module doc)
    reluish_real = hires / (3.0 / 32768.0)  # in float32 too this gives the same int16 multiplier
    m_out, e_out = _tflm_quantize_multiplier(out_real, "the hard-swish output multiplier")
    m_rel, e_rel = _tflm_quantize_multiplier(reluish_real, "the hard-swish reluish multiplier")
    if e_out > 0:
        raise ValueError(f"hard-swish: input scale / output scale = {s_in / s_out!r} is too large: TFLite Micro "
                         f"requires (input scale / 128) / output scale < 1 (output multiplier exponent <= 0)")
    return _downscale_to_int16(m_out), e_out, _downscale_to_int16(m_rel), e_rel


def hard_swish_table(in_scale: float, in_zp: int, out_scale: float, out_zp: int) -> np.ndarray:
    """TFLite Micro's int8 HARD_SWISH for every int8 input: int8 array of 256, index = input + 128."""
    m_out, e_out, m_rel, e_rel = hard_swish_params(in_scale, out_scale)
    out_zp = _zero_point(out_zp, "the output zero point")
    x = INPUTS - _zero_point(in_zp, "the input zero point")  # in [-255, 255]
    hires = x * (1 << 7)  # fits int16
    preshift_out = _srdhm16(hires, m_out)
    reluish = hires
    if e_rel > 0:
        reluish = _sat_lshift16(reluish, e_rel - 1)
    reluish = _srdhm16(reluish, m_rel)
    if e_rel > 0:
        reluish = _sat_lshift16(reluish, 1)
    if e_rel < 0:
        reluish = _rdbpot16(reluish, -e_rel)
    reluish = (reluish + (1 << 15)) >> 1  # [-1, 1] -> [0, 1], Q0.15
    out = _rdbpot16(_sdhm16(reluish, preshift_out), -e_out)
    out = _wrap16(out + out_zp)
    return _table(np.clip(out, -128, 127))


# ------------------------------------------------------------------------------------- LEAKY_RELU

def leaky_relu_params(alpha: float, in_scale: float, out_scale: float) -> tuple[int, int, int, int, bool]:
    """(identity_multiplier, identity_shift, alpha_multiplier, alpha_shift, alpha_negative) as TFLite
    Micro's LEAKY_RELU Prepare: QuantizeMultiplier of ``in_scale / out_scale`` and of
    ``in_scale · alpha / out_scale``, computed in double from the float32 values (see the module
    doc). A negative alpha gives a negative multiplier; the kernel multiplies by its magnitude and
    negates the product, which equals QuantizeMultiplier of ``|alpha ratio|`` unless the magnitude
    rounds up to 2^31 (TFLite Micro then negates INT32_MIN: refused here).
    """
    s_in, s_out = _f32(in_scale, "the input scale"), _f32(out_scale, "the output scale")
    a = float(np.float32(alpha))
    if not math.isfinite(a):
        raise ValueError(f"leaky ReLU alpha must be finite, got {alpha!r}")
    identity_real = s_in / s_out  # double arithmetic on the float32 values (see the module doc)
    alpha_real = s_in * a / s_out  # s_in * a is exact in double: one rounding, at the division
    m_id, e_id = _tflm_quantize_multiplier(identity_real, "the leaky ReLU identity multiplier")
    m_al, e_al = _tflm_quantize_multiplier(abs(alpha_real), "the leaky ReLU alpha multiplier")
    if alpha_real < 0 and math.floor(math.frexp(-alpha_real)[0] * (1 << 31) + 0.5) == 1 << 31:
        raise ValueError(f"leaky ReLU: alpha multiplier {alpha_real!r} rounds to -2^31: TFLite Micro overflows")
    for e in (e_id, e_al):
        if (255 << max(e, 0)) > INT32_MAX:  # x · 2^shift overflows int32 in MultiplyByQuantizedMultiplier
            raise ValueError(f"leaky ReLU: scale ratio too large (shift {e}): TFLite Micro would overflow int32")
    return m_id, e_id, m_al, e_al, alpha_real < 0


def leaky_relu_table(alpha: float, in_scale: float, in_zp: int, out_scale: float, out_zp: int) -> np.ndarray:
    """TFLite Micro's int8 LEAKY_RELU for every int8 input: int8 array of 256, index = input + 128."""
    m_id, e_id, m_al, e_al, negative = leaky_relu_params(alpha, in_scale, out_scale)
    out_zp = _zero_point(out_zp, "the output zero point")
    x = INPUTS - _zero_point(in_zp, "the input zero point")
    identity = multiply_by_quantized_multiplier(x, m_id, e_id)
    scaled_alpha = multiply_by_quantized_multiplier(x, m_al, e_al)
    if negative:
        scaled_alpha = -scaled_alpha
    return _table(np.clip(out_zp + np.where(x >= 0, identity, scaled_alpha), -128, 127))


def requantize_table(in_scale: float, in_zp: int, out_scale: float, out_zp: int) -> np.ndarray:
    """TFLite Micro's int8 -> int8 QUANTIZE (reference_ops::Requantize): MBQM(q - in_zp, M) + out_zp,
    clamped, with M = QuantizeMultiplier(double(float32 in_scale) / double(float32 out_scale))."""
    s_in, s_out = _f32(in_scale, "input scale"), _f32(out_scale, "output scale")
    mult, shift = quantize_multiplier(s_in / s_out)
    if shift > 0 and 255 << shift > INT32_MAX:
        raise ValueError(f"the rescaling {s_in / s_out} is too large for int32")
    x = INPUTS - _zero_point(in_zp, "input zero point")
    return _table(np.clip(multiply_by_quantized_multiplier(x, mult, shift) + _zero_point(out_zp, "output zero point"),
                          -128, 127))
