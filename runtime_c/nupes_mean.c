#include "nupes_fixedpoint.h"
#include "nupes_kernels.h"

/* TFLite Micro's int8 MEAN over the pixels (reference_ops::QuantizedMeanOrSum): per channel,
 * MBQM(sum - in_zp * hw, mult, shift) + out_zp, clamped to int8. mult and shift already hold
 * 1 / hw (folded by the code generator exactly as TFLite Micro folds it), so a MEAN that changes
 * the scale costs what one that keeps it does (a plain per-channel loop, not yet measured). */
void nupes_mean_s8(const int8_t *in, int8_t *out, int32_t hw, int32_t c, const nupes_mean_params_t *p)
{
    int32_t ch, i;
    const int32_t zp_sum = p->in_zp * hw;
    for (ch = 0; ch < c; ++ch) {
        const int8_t *x = in + ch;
        int32_t sum = 0;
        for (i = 0; i < hw; ++i) {
            sum += *x;
            x += c;
        }
        out[ch] = nupes_clamp_s8(nupes_requantize(sum - zp_sum, p->mult, p->shift) + p->out_zp, -128, 127);
    }
}

/* TFLite Micro's int8 MEAN over any axes (QuantizedMeanOrSum, its general path): the outputs in
 * order (outer loops), each the requantized sum of the values the inner loops reach. */
void nupes_mean_reduce_s8(const int8_t *src, int8_t *dst, const nupes_reduce_t *r, const nupes_mean_params_t *p)
{
    const int32_t *n = r->outer_count, *os = r->outer_stride, *k = r->inner_count, *is = r->inner_stride;
    const int32_t zp_sum = p->in_zp * (k[0] * k[1] * k[2] * k[3] * k[4]);
    int32_t a, b, c, d, e, i0, i1, i2, i3, i4;
    for (a = 0; a < n[0]; ++a)
        for (b = 0; b < n[1]; ++b)
            for (c = 0; c < n[2]; ++c)
                for (d = 0; d < n[3]; ++d)
                    for (e = 0; e < n[4]; ++e) {
                        const int8_t *s = src + r->src_off + a * os[0] + b * os[1] + c * os[2] + d * os[3] + e * os[4];
                        int32_t sum = 0;
                        for (i0 = 0; i0 < k[0]; ++i0)
                            for (i1 = 0; i1 < k[1]; ++i1)
                                for (i2 = 0; i2 < k[2]; ++i2)
                                    for (i3 = 0; i3 < k[3]; ++i3) {
                                        const int8_t *t = s + i0 * is[0] + i1 * is[1] + i2 * is[2] + i3 * is[3];
                                        for (i4 = 0; i4 < k[4]; ++i4) {
                                            sum += t[i4 * is[4]];
                                        }
                                    }
                        *dst++ = (int8_t)nupes_clamp_s8(nupes_requantize(sum - zp_sum, p->mult, p->shift) + p->out_zp,
                                                        -128, 127);
                    }
}
