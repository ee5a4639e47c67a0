#include "nupes_fixedpoint.h"
#include "nupes_kernels.h"

/* TFLite Micro's int8 MUL (reference_integer_ops::MulElementwise, and BroadcastMul4DSlow for an
 * operand of one value per channel): out = clamp(out_zp + MBQM((a - a_zp) * (b - b_zp), mult, shift)).
 * HWC tensors of pixels x c; an operand flagged per_channel holds c values used at every pixel (a
 * squeeze-and-excite scale). The product of two int8 values minus their zero points fits 17 bits;
 * the code generator checks that its left shift, if any, fits int32. */
void nupes_mul_s8(const int8_t *a, const int8_t *b, int8_t *out, int32_t pixels, int32_t c, int32_t a_per_channel,
                  int32_t b_per_channel, const nupes_mul_params_t *p)
{
    int32_t px, ch;
    for (px = 0; px < pixels; ++px) {
        const int8_t *pa = a_per_channel ? a : a + px * c;
        const int8_t *pb = b_per_channel ? b : b + px * c;
        for (ch = 0; ch < c; ++ch) {
            const int32_t prod = ((int32_t)pa[ch] - p->in1_zp) * ((int32_t)pb[ch] - p->in2_zp);
            out[ch] = nupes_clamp_s8(nupes_requantize(prod, p->mult, p->shift) + p->out_zp, p->act_min, p->act_max);
        }
        out += c;
    }
}
