#include "nupes_dsp.h"
#include "nupes_fixedpoint.h"
#include "nupes_kernels.h"
#include "nupes_mve.h"

#if NUPES_USE_DSP
/*
 * requant(s, mult, -right) + zp, saturated to int8, for 1 <= right <= 30 and |2 s| < 2^31:
 *   y = SMMULR(2 s, mult) = floor((2 s mult + 2^31) / 2^32) = floor((s mult + 2^30) / 2^31)
 *     = SRDHM(s, mult) (mult >= 0, see nupes_fixedpoint.h), and |y| <= 2^30;
 *   RoundingDivideByPOT(y, right) = (y + (y < 0 ? -1 : 0) + 2^(right-1)) >> right (halves away
 *     from zero; the sum stays within int32).
 * LSL, SMMULR, ADD (y asr #31), ADD, ASR, ADD zp, SSAT: 7 instructions, where nupes_requantize
 * and the clamp take ~20.
 */
static inline int32_t nupes_add_out(int32_t s, int32_t mult, int32_t right, int32_t half, int32_t zp)
{
    const int32_t y = nupes_smmulr(2 * s, mult);
    return nupes_ssat8(((y + (y >> 31) + half) >> right) + zp);
}
#endif

/*
 * out = clamp(requant(t1[in1] + t2[in2], out_mult, out_shift) + out_zp): t1, t2 (in flash, 256
 * entries each, indexed x + 128) hold each input's rescaling to the common grid,
 * requant((x - zp) * 2^left_shift, mult, shift), computed by the code generator with the
 * reference's own arithmetic. The code generator also checks that every sum s of two entries has
 * |2 s 2^max(out_shift, 0)| < 2^31.
 */
/*
 * Without tables (a model built for a flash budget gives their 2 KB to weights; the code generator
 * calls this kernel instead of nupes_add, so a model with tables does not link it):
 * each input's rescaling requant((x - zp) * 2^left_shift, mult, shift) is computed per element, the
 * reference's arithmetic. The code generator checks 255 * 2^(left_shift + 1 + max(shift, 0)) < 2^31.
 * DSP path (input shifts in [-30, 0], output shift in [-30, -1]): per input SUB, MUL, SMMULR
 * (= SRDHM, as in nupes_add_out), then the rounding shift.
 */
#if NUPES_USE_DSP
/* One input's rescaling: SRDHM(x 2^left - zp 2^left, mult) by SMMULR of twice the argument (as in
 * nupes_add_out; x2l = 2^(left+1), zp2l = zp 2^(left+1)), then RoundingDivideByPOT by right
 * (0..30) without a branch: mask = right ? -1 : 0 and half = 2^right / 2, so right = 0 gives y. */
static inline int32_t nupes_add_rescale(int32_t x, int32_t x2l, int32_t zp2l, int32_t mult, int32_t right,
                                        int32_t half, int32_t mask)
{
    const int32_t y = nupes_smmulr(x * x2l - zp2l, mult);
    return (y + ((y >> 31) & mask) + half) >> right;
}
#endif

void nupes_add_computed(const int8_t *in1, const int8_t *in2, int8_t *out, int32_t n, const nupes_add_params_t *p)
{
    const int32_t zp1 = p->in1_zp, zp2 = p->in2_zp, m1 = p->in1_mult, m2 = p->in2_mult;
    const int32_t s1 = p->in1_shift, s2 = p->in2_shift, left = p->left_shift;
    const int32_t out_mult = p->out_mult, out_shift = p->out_shift, out_zp = p->out_zp;
    const int32_t act_min = p->act_min, act_max = p->act_max;
    int32_t i = 0;
#if NUPES_USE_DSP
    if (s1 <= 0 && s1 >= -30 && s2 <= 0 && s2 >= -30 && out_shift <= -1 && out_shift >= -30) {
        const int32_t r1 = -s1, r2 = -s2, h1 = (1 << r1) >> 1, h2 = (1 << r2) >> 1;
        const int32_t k1 = r1 ? -1 : 0, k2 = r2 ? -1 : 0;
        const int32_t right = -out_shift, half = 1 << (right - 1), x2l = 2 << left;
        const int32_t zp1_2l = zp1 * x2l, zp2_2l = zp2 * x2l;
        for (; i < n; ++i) {
            const int32_t sum = nupes_add_rescale(in1[i], x2l, zp1_2l, m1, r1, h1, k1)
                                + nupes_add_rescale(in2[i], x2l, zp2_2l, m2, r2, h2, k2);
            out[i] = (int8_t)nupes_add_out(sum, out_mult, right, half, out_zp);
        }
        if (act_min > -128 || act_max < 127) { /* a fused ReLU / ReLU6 narrower than int8 */
            int32_t j;
            for (j = 0; j < n; ++j) {
                out[j] = nupes_clamp_s8(out[j], act_min, act_max);
            }
        }
    }
#endif
    for (; i < n; ++i) {
        const int32_t sum = nupes_requantize((in1[i] - zp1) * (1 << left), m1, s1)
                            + nupes_requantize((in2[i] - zp2) * (1 << left), m2, s2);
        out[i] = nupes_clamp_s8(nupes_requantize(sum, out_mult, out_shift) + out_zp, act_min, act_max);
    }
}

void nupes_add(const int8_t *in1, const int8_t *in2, int8_t *out, int32_t n, const nupes_add_params_t *p)
{
    /* locals: the int8 stores may alias *p, which would force a reload of every field per element */
    const int32_t *const t1 = p->in1_table + 128, *const t2 = p->in2_table + 128;
    const int32_t out_mult = p->out_mult, out_shift = p->out_shift, out_zp = p->out_zp;
    const int32_t act_min = p->act_min, act_max = p->act_max;
    int32_t i = 0;
#if defined(__ARM_FEATURE_MVE)
    {
        /* Helium, four elements per step: two VLDRB.S32, the indices moved to 0..255, two VLDRW gathers
         * from the tables, VADD, then the vector requantization (nupes_mve.h, exactly nupes_requantize
         * for every shift), out_zp, the clamp and one narrowing VSTRB. The last n % 4 go through the
         * loop below. */
        const uint32_t *const u1 = (const uint32_t *)(const void *)p->in1_table;
        const uint32_t *const u2 = (const uint32_t *)(const void *)p->in2_table;
        const int32x4_t lo4 = vdupq_n_s32(act_min), hi4 = vdupq_n_s32(act_max);
        for (; i + 4 <= n; i += 4) {
            const uint32x4_t x1 = vreinterpretq_u32_s32(vaddq_n_s32(vldrbq_s32(in1 + i), 128));
            const uint32x4_t x2 = vreinterpretq_u32_s32(vaddq_n_s32(vldrbq_s32(in2 + i), 128));
            const int32x4_t s = vaddq_s32(vreinterpretq_s32_u32(vldrwq_gather_shifted_offset_u32(u1, x1)),
                                          vreinterpretq_s32_u32(vldrwq_gather_shifted_offset_u32(u2, x2)));
            vstrbq_s32(out + i, nupes_mve_output1(s, out_mult, out_shift, out_zp, lo4, hi4));
        }
    }
#endif
#if NUPES_USE_DSP
    if (out_shift <= -1 && out_shift >= -30) {
        const int32_t right = -out_shift, half = 1 << (right - 1), first = i; /* Helium's already clamped */
        /* Four elements per step. Per element: 2 LDRSB, 2 LDR (table), ADD, the 7 of nupes_add_out,
         * STRB, and a quarter of the loop's pointer steps and test: ~14 instructions. */
        for (; i + 4 <= n; i += 4) {
            out[i] = (int8_t)nupes_add_out(t1[in1[i]] + t2[in2[i]], out_mult, right, half, out_zp);
            out[i + 1] = (int8_t)nupes_add_out(t1[in1[i + 1]] + t2[in2[i + 1]], out_mult, right, half, out_zp);
            out[i + 2] = (int8_t)nupes_add_out(t1[in1[i + 2]] + t2[in2[i + 2]], out_mult, right, half, out_zp);
            out[i + 3] = (int8_t)nupes_add_out(t1[in1[i + 3]] + t2[in2[i + 3]], out_mult, right, half, out_zp);
        }
        if (act_min > -128 || act_max < 127) { /* a fused ReLU / ReLU6 narrower than int8 */
            int32_t j;
            for (j = first; j < i; ++j) {
                out[j] = nupes_clamp_s8(out[j], act_min, act_max);
            }
        }
    }
#endif
    /* The portable path, and the DSP path's last n % 4 elements (or all, for an out_shift outside
     * [-30, -1]): 2 LDRSB, 2 LDR, ADD, nupes_requantize (~20), clamp and STRB per element. */
    for (; i < n; ++i) {
        const int32_t sum = nupes_requantize(t1[in1[i]] + t2[in2[i]], out_mult, out_shift) + out_zp;
        out[i] = nupes_clamp_s8(sum, act_min, act_max);
    }
}
