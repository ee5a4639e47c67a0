/*
 * nupes_softmax.c - TFLite Micro's int8 SOFTMAX (output scale 1/256, zero point -128), bit-exact
 * with the NumPy reference nupes_edge/intref/softmax.py. The rule is in docs/numerics.md
 * ("Softmax"): gemmlowp fixed point, the exp() input in Q5.26, the sum of exponentials in Q12.19,
 * the reciprocal by Newton-Raphson in Q2.29. Integers only, no allocation.
 *
 * Every multiplication is a SaturatingRoundingDoublingHighMul (nupes_srdhm). Its one saturating
 * case, a = b = INT32_MIN, cannot occur here: the only operands that can be negative are bounded
 * by 2^29 in magnitude (the Taylor variable, the Newton correction), and every constant is
 * far from INT32_MIN. nupes_srdhm's formula is exact for either sign of the product otherwise.
 */
#include "nupes_kernels.h"
#include "nupes_fixedpoint.h"

#define NUPES_SM_DIFF_FRAC_BITS 26 /* Q5.26 */
#define NUPES_SM_ACCUM_INT_BITS 12 /* Q12.19 */

/* gemmlowp SaturatingRoundingMultiplyByPOT<e>, e in 1..30: x * 2^e saturated to int32 (with
 * gemmlowp's thresholds). */
static int32_t nupes_sm_sat_mul_pot(int32_t x, int32_t e)
{
    const int32_t threshold = (int32_t)((1u << (31 - e)) - 1u);
    if (x > threshold) {
        return INT32_MAX;
    }
    if (x < -threshold) {
        return INT32_MIN;
    }
    return (int32_t)((uint32_t)x << e);
}

/* exp(a) for Q0.31 a in [-1/4, 0): Taylor series of order 4 around -1/8. */
static int32_t nupes_sm_exp_quarter(int32_t a)
{
    const int32_t exp_minus_one_eighth = 1895147668;
    const int32_t one_third = 715827883;
    const int32_t x = a + (1 << 28);
    const int32_t x2 = nupes_srdhm(x, x);
    const int32_t x3 = nupes_srdhm(x2, x);
    const int32_t x4 = nupes_srdhm(x2, x2);
    const int32_t x4_over_4 = nupes_rdbpot(x4, 2);
    const int32_t poly = nupes_rdbpot(nupes_srdhm(x4_over_4 + x3, one_third) + x2, 1);
    return exp_minus_one_eighth + nupes_srdhm(exp_minus_one_eighth, x + poly);
}

/* exp(a) for Q5.26 a <= 0 (a > -2^31), Q0.31 result: exp of a's part in [-1/4, 0), times exp(-2^k)
 * for each bit k of the rest. */
static int32_t nupes_sm_exp_negative(int32_t a)
{
    static const int32_t barrel[7] = {
        1672461947, /* exp(-1/4) */
        1302514674, /* exp(-1/2) */
        790015084,  /* exp(-1) */
        290630308,  /* exp(-2) */
        39332535,   /* exp(-4) */
        720401,     /* exp(-8) */
        242         /* exp(-16) */
    };
    const int32_t quarter = (int32_t)1 << (NUPES_SM_DIFF_FRAC_BITS - 2);
    const int32_t a_mod_quarter_minus_quarter = (a & (quarter - 1)) - quarter;
    /* a multiple of 1/4 in [0, 32): only its bits 24..30 matter (bit 31 is set only for a = 0) */
    const uint32_t remainder = (uint32_t)a_mod_quarter_minus_quarter - (uint32_t)a;
    int32_t result = nupes_sm_exp_quarter(nupes_sm_sat_mul_pot(a_mod_quarter_minus_quarter, 5));
    int32_t k;
    if (a == 0) {
        return INT32_MAX; /* One() of Q0.31 */
    }
    for (k = 0; k < 7; ++k) {
        if (remainder & (1u << (NUPES_SM_DIFF_FRAC_BITS - 2 + k))) {
            result = nupes_srdhm(result, barrel[k]);
        }
    }
    return result;
}

/* 1 / (1 + a) for Q0.31 a in [0, 1): three Newton-Raphson steps in Q2.29; Q0.31 result. */
static int32_t nupes_sm_one_over_one_plus_x(int32_t a)
{
    const int32_t half_denominator = (int32_t)(((int64_t)a + INT32_MAX + 1) >> 1); /* RoundingHalfSum(a, 1) */
    int32_t x = 1515870810 + nupes_srdhm(half_denominator, -1010580540);       /* 48/17 - 32/17 d */
    int32_t i;
    for (i = 0; i < 3; ++i) {
        const int32_t one_minus_dx = (1 << 29) - nupes_srdhm(half_denominator, x);
        x += nupes_sm_sat_mul_pot(nupes_srdhm(x, one_minus_dx), 2);
    }
    return nupes_sm_sat_mul_pot(x, 1);
}

static int32_t nupes_sm_clz(uint32_t v) /* v != 0 */
{
#if defined(__GNUC__)
    return (int32_t)__builtin_clz(v);
#else
    int32_t n = 0;
    while (!(v & 0x80000000u)) {
        v <<= 1;
        ++n;
    }
    return n;
#endif
}

/* exp((x - max) * beta * scale) in Q0.31 for a difference diff >= diff_min (diff <= 0): TFLite's
 * MultiplyByQuantizedMultiplierGreaterThanOne, then exp. |diff| * 2^left_shift < 2^31 because
 * diff >= diff_min. */
static int32_t nupes_sm_exp_of_diff(int32_t diff, int32_t mult, int32_t left_shift)
{
    return nupes_sm_exp_negative(nupes_srdhm((int32_t)((uint32_t)diff << left_shift), mult));
}

void nupes_softmax_s8(const int8_t *input, int8_t *output, int32_t rows, int32_t cols,
                      int32_t input_multiplier, int32_t input_left_shift, int32_t diff_min)
{
    int32_t r, c;
    for (r = 0; r < rows; ++r) {
        const int8_t *in = input + (int64_t)r * cols;
        int8_t *out = output + (int64_t)r * cols;
        int32_t max_in_row = INT8_MIN;
        int64_t sum = 0;
        int32_t headroom_plus_one, exponent, recip;
        for (c = 0; c < cols; ++c) {
            if (in[c] > max_in_row) {
                max_in_row = in[c];
            }
        }
        for (c = 0; c < cols; ++c) {
            const int32_t diff = (int32_t)in[c] - max_in_row;
            if (diff >= diff_min) {
                /* Rescale<12>: Q0.31 -> Q12.19 */
                sum += nupes_rdbpot(nupes_sm_exp_of_diff(diff, input_multiplier, input_left_shift),
                                    NUPES_SM_ACCUM_INT_BITS);
            }
        }
        if (sum > INT32_MAX) {
            sum = INT32_MAX; /* >= 4096 columns only; TFLite would overflow */
        }
        /* sum >= 2^19: the maximum itself contributes exp(0) = 1 */
        headroom_plus_one = nupes_sm_clz((uint32_t)sum);
        recip = nupes_sm_one_over_one_plus_x(
            (int32_t)(((uint32_t)sum << headroom_plus_one) - 0x80000000u));
        /* 23..34; TFLite Micro stops above 31 (a sum >= 256, >= 512 columns), where the exact
         * quotient of the non-negative product (< 2^31) by 2^exponent rounds to 0. */
        exponent = (NUPES_SM_ACCUM_INT_BITS - headroom_plus_one) + 31 - 8;
        for (c = 0; c < cols; ++c) {
            const int32_t diff = (int32_t)in[c] - max_in_row;
            int32_t v = INT8_MIN;
            if (diff >= diff_min) {
                const int32_t p = nupes_srdhm(recip, nupes_sm_exp_of_diff(diff, input_multiplier, input_left_shift));
                v = (exponent > 31 ? 0 : nupes_rdbpot(p, exponent)) + INT8_MIN;
                v = v > INT8_MAX ? INT8_MAX : v;
            }
            out[c] = (int8_t)v;
        }
    }
}
