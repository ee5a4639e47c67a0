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

/*
 * One output channel's requantization, precomputed once per channel for the fused form below.
 * For a right shift e = -shift >= 1: with r = SRDHM(acc, mult) = floor((acc*mult + 2^30) / 2^31)
 * and RDBPOT(r, e) = floor((r + 2^(e-1) - [r < 0]) / 2^e), nested floors merge into
 *     floor((acc*mult + 2^30 + 2^(30+e) - [r < 0]*2^31) / 2^(31+e)),
 * one SMLAL onto a precomputed 64-bit constant k = 2^30 + 2^(30+e) and a shift of the high word
 * by e - 1. [r < 0] may be read as [acc < 0] (mult >= 0): they differ only when
 * -2^30 <= acc*mult < 0, where r = 0 and the numerator stays in [0, 2^(31+e)), so the result is
 * 0 either way. |acc*mult| < 2^62 and k < 2^62: no overflow. Shifts >= 0 take the plain path.
 * (Derivation by the depthwise kernel's author; tests/test_fixedpoint_c.py checks it against the
 * reference on random and edge values.)
 */
typedef struct {
    int32_t mult;
    int32_t e;    /* right shift, 0 for shift >= 0 */
    int32_t left; /* left shift, 0 for shift <= 0 */
    int32_t k_lo, k_hi;
} nupes_rq_t;

static inline void nupes_rq_init(nupes_rq_t *q, int32_t mult, int32_t shift)
{
    const uint64_t k = shift < 0 ? ((uint64_t)1 << 30) + ((uint64_t)1 << (30 - shift)) : 0;
    q->mult = mult;
    q->e = shift < 0 ? -shift : 0;
    q->left = shift > 0 ? shift : 0;
    q->k_lo = (int32_t)(uint32_t)k;
    q->k_hi = (int32_t)(uint32_t)(k >> 32);
}

/* Equal to nupes_requantize(acc, mult, shift) for every acc. */
static inline int32_t nupes_rq_apply(int32_t acc, const nupes_rq_t *q)
{
    if (q->e > 0) {
        const int64_t k = (int64_t)(((uint64_t)(uint32_t)q->k_hi << 32) | (uint32_t)q->k_lo);
        const int64_t num = k - (int64_t)(((uint32_t)acc >> 31) << 31) + (int64_t)acc * q->mult;
        return (int32_t)(num >> 32) >> (q->e - 1);
    }
    return nupes_srdhm((int32_t)((uint32_t)acc << q->left), q->mult);
}

static inline int8_t nupes_clamp_s8(int32_t v, int32_t lo, int32_t hi)
{
    return (int8_t)(v < lo ? lo : (v > hi ? hi : v));
}

#endif /* NUPES_FIXEDPOINT_H */
