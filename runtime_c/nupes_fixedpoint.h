/*
 * nupes_fixedpoint.h - TFLite's integer requantization, bit-exact with the NumPy reference
 * (nupes_edge/intref/fixedpoint.py) and with TFLite Micro's reference int8 kernels
 * ("double rounding": SaturatingRoundingDoublingHighMul, then RoundingDivideByPOT).
 */
#ifndef NUPES_FIXEDPOINT_H
#define NUPES_FIXEDPOINT_H

#include <stdint.h>

/* round(a * b / 2^31), ties away from zero, for b >= 0 (every multiplier is: the code generator
 * checks it, so TFLite's one saturating case, a = b = INT32_MIN, cannot occur). TFLite adds a
 * nudge of 2^30 (ab >= 0) or 1 - 2^30 (ab < 0) and divides truncating toward zero; for ab < 0,
 * trunc((ab + 1 - 2^30) / 2^31) = floor((ab + 2^30) / 2^31), so one SMLAL and a 64-bit shift
 * give the same value for every input (about 5 instructions on Cortex-M4 instead of ~20). */
static inline int32_t nupes_srdhm(int32_t a, int32_t b)
{
    const int64_t ab = (int64_t)a * (int64_t)b + ((int64_t)1 << 30);
    return (int32_t)(ab >> 31); /* arithmetic shift: floor */
}

/* x / 2^exponent, rounded to nearest, ties away from zero (0 <= exponent <= 31): TFLite's
 * RoundingDivideByPOT, with its threshold (mask >> 1) + (x < 0) written as (mask >> 1) - (x >> 31). */
static inline int32_t nupes_rdbpot(int32_t x, int32_t exponent)
{
    const int32_t mask = (int32_t)((1u << exponent) - 1u);
    const int32_t threshold = (mask >> 1) - (x >> 31);
    return (x >> exponent) + ((x & mask) > threshold ? 1 : 0);
}

/* x * multiplier * 2^(shift - 31), TFLite MultiplyByQuantizedMultiplier. The code generator
 * guarantees x * 2^max(shift, 0) fits int32. */
static inline int32_t nupes_requantize(int32_t x, int32_t multiplier, int32_t shift)
{
    const int32_t left = shift > 0 ? shift : 0;
    const int32_t right = shift > 0 ? 0 : -shift;
    return nupes_rdbpot(nupes_srdhm((int32_t)((uint32_t)x << left), multiplier), right);
}

static inline int8_t nupes_clamp_s8(int32_t v, int32_t lo, int32_t hi)
{
    return (int8_t)(v < lo ? lo : (v > hi ? hi : v));
}

#endif /* NUPES_FIXEDPOINT_H */
