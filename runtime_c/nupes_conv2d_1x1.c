#include "nupes_dot.h"
#include "nupes_fixedpoint.h"
#include "nupes_kernels.h"

/*
 * 1x1 convolution, stride 1, no padding: in HWC the input is a matrix of out_h*out_w pixel rows
 * of in_c contiguous values, so the layer is a plain matrix product. The DSP path (in_c % 4 == 0)
 * folds the input zero point into the bias (sum w*(x - zp) = sum w*x - zp*sum w: no border here)
 * and runs two output channels x two pixels per inner loop (nupes_dot22_run, ~1.3 instructions
 * per MAC); the code generator chooses this kernel only when in_c % 4 == 0 (codegen/plan.py), so
 * the DSP build carries no other path. The portable path is the reference loop. Scratch: two
 * decoded channels (2 * in_c).
 */
void nupes_conv2d_1x1(const int8_t *in, int8_t *out, const nupes_conv_geom_t *g, const nupes_layer_t *w, int16_t *scratch)
{
    const int32_t in_c = g->in_c, out_c = g->out_c;
    const int32_t pixels = g->out_h * g->out_w;
    int16_t *s1 = scratch + in_c;
    int32_t oc, p;
    for (oc = 0; oc < out_c; oc += 2) {
        const int32_t oc1 = oc + 1 < out_c ? oc + 1 : oc; /* an odd last channel runs as its own twin */
        const int8_t *x = in;
        int8_t *po = out + oc;
        nupes_decode_row(w->packed + oc * w->row_bytes, w->bits, w->lut, in_c, in_c, scratch);
        nupes_decode_row(w->packed + oc1 * w->row_bytes, w->bits, w->lut, in_c, in_c, s1);
#if NUPES_USE_DSP
        {
            /* locals: int8 output stores may alias the layer struct (fields would be reloaded) */
            const int32_t out_zp = w->out_zp, lo = w->act_min, hi = w->act_max;
            nupes_rq_t q0, q1;
            int32_t sum0 = 0, sum1 = 0, b0, b1, j;
            for (j = 0; j < in_c; j += 2) {
                sum0 = nupes_smlad(nupes_read32(scratch + j), 0x00010001, sum0);
                sum1 = nupes_smlad(nupes_read32(s1 + j), 0x00010001, sum1);
            }
            /* |bias| + 128 * sum|w| <= acc_bound: the folded bias fits, and so does every partial sum */
            b0 = w->bias[oc] - w->in_zp * sum0;
            b1 = w->bias[oc1] - w->in_zp * sum1;
            nupes_rq_init(&q0, w->mult[oc], w->shift[oc]);
            nupes_rq_init(&q1, w->mult[oc1], w->shift[oc1]);
            for (p = 0; p + 1 < pixels; p += 2, x += 2 * in_c, po += 2 * out_c) {
                int32_t acc[4] = {0, 0, 0, 0};
                nupes_dot22_run(x, x + in_c, scratch, s1, in_c, acc);
                po[0] = nupes_clamp_s8(nupes_rq_apply(acc[0] + b0, &q0) + out_zp, lo, hi);
                po[out_c] = nupes_clamp_s8(nupes_rq_apply(acc[1] + b0, &q0) + out_zp, lo, hi);
                if (oc1 != oc) {
                    po[1] = nupes_clamp_s8(nupes_rq_apply(acc[2] + b1, &q1) + out_zp, lo, hi);
                    po[out_c + 1] = nupes_clamp_s8(nupes_rq_apply(acc[3] + b1, &q1) + out_zp, lo, hi);
                }
            }
            if (p < pixels) { /* an odd last pixel */
                int32_t acc0 = 0, acc1 = 0;
                nupes_dot21_groups(x, scratch, s1, in_c, &acc0, &acc1);
                po[0] = nupes_clamp_s8(nupes_rq_apply(acc0 + b0, &q0) + out_zp, lo, hi);
                if (oc1 != oc) {
                    po[1] = nupes_clamp_s8(nupes_rq_apply(acc1 + b1, &q1) + out_zp, lo, hi);
                }
            }
        }
#else
        for (p = 0; p < pixels; ++p, x += in_c, po += out_c) {
            int32_t acc0 = w->bias[oc], acc1 = w->bias[oc1];
            acc0 = nupes_dot_run(x, scratch, in_c, 0, in_c, w->in_zp, acc0);
            acc1 = nupes_dot_run(x, s1, in_c, 0, in_c, w->in_zp, acc1);
            po[0] = nupes_clamp_s8(nupes_requantize(acc0, w->mult[oc], w->shift[oc]) + w->out_zp, w->act_min, w->act_max);
            if (oc1 != oc) {
                po[1] = nupes_clamp_s8(nupes_requantize(acc1, w->mult[oc1], w->shift[oc1]) + w->out_zp, w->act_min,
                                       w->act_max);
            }
        }
#endif
    }
}
