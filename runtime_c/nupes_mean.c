#include "nupes_fixedpoint.h"
#include "nupes_kernels.h"
#include "nupes_reduce.h"

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

/* TFLite Micro's int8 MEAN over any axes (QuantizedMeanOrSum, its general path): each output the
 * requantized sum of its values. */
void nupes_mean_reduce_s8(const int8_t *src, int8_t *dst, const nupes_reduce_t *r, const nupes_mean_params_t *p)
{
    const int32_t *k = r->inner_count, n = nupes_reduce_outputs(r);
    const int32_t zp_sum = p->in_zp * (k[0] * k[1] * k[2] * k[3] * k[4]);
    int32_t o;
    for (o = 0; o < n; ++o) {
        const int32_t sum = nupes_reduce_values(nupes_reduce_start(src, r, o), r, 0);
        dst[o] = nupes_clamp_s8(nupes_requantize(sum - zp_sum, p->mult, p->shift) + p->out_zp, -128, 127);
    }
}
