/*
 * nupes_fixedpoint.h - TFLite's integer requantization, bit-exact with the NumPy reference
 * (nupes_edge/intref/fixedpoint.py) and with TFLite Micro's reference int8 kernels
 * ("double rounding": SaturatingRoundingDoublingHighMul, then RoundingDivideByPOT).
 */
#ifndef NUPES_FIXEDPOINT_H
#define NUPES_FIXEDPOINT_H

#include <stdint.h>

/* round(a * b / 2^31), ties away from zero; saturates the single overflow case. */
static inline int32_t nupes_srdhm(int32_t a, int32_t b)
{
    int64_t ab;
    int64_t nudge;
    if (a == b && a == INT32_MIN) {
        return INT32_MAX;
    }
    ab = (int64_t)a * (int64_t)b;
    nudge = ab >= 0 ? ((int64_t)1 << 30) : (1 - ((int64_t)1 << 30));
    return (int32_t)((ab + nudge) / ((int64_t)1 << 31)); /* C division truncates toward zero */
}

/* x / 2^exponent, rounded to nearest, ties away from zero (0 <= exponent <= 31). */
static inline int32_t nupes_rdbpot(int32_t x, int32_t exponent)
{
    const int32_t mask = (int32_t)(((int64_t)1 << exponent) - 1);
    const int32_t remainder = x & mask;
    const int32_t threshold = (mask >> 1) + (x < 0 ? 1 : 0);
    return (x >> exponent) + (remainder > threshold ? 1 : 0);
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
