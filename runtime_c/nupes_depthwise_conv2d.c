#include "nupes_fixedpoint.h"
#include "nupes_kernels.h"
#include "nupes_window.h"

/* Output channel oc reads input channel oc / multiplier; its k_h * k_w levels are decoded once
 * and reused for every output position. Taps outside the image (zero padding) are skipped. */
void nupes_depthwise_conv2d(const int8_t *in, int8_t *out, const nupes_conv_geom_t *g, const nupes_layer_t *w, int16_t *scratch)
{
    const int32_t mult = g->out_c / g->in_c;
    const int32_t row_stride = g->in_w * g->in_c;
    int32_t oc, oy, ox, ky, kx;
    for (oc = 0; oc < g->out_c; ++oc) {
        const int8_t *in_c = in + oc / mult;
        nupes_decode_row(w->packed + oc * w->row_bytes, w->bits, w->lut, g->k_h * g->k_w, 1, scratch);
        for (oy = 0; oy < g->out_h; ++oy) {
            const int32_t iy0 = oy * g->stride_h - g->pad_t;
            int32_t ky_lo, ky_hi;
            nupes_window_taps(iy0, g->k_h, g->in_h, &ky_lo, &ky_hi);
            for (ox = 0; ox < g->out_w; ++ox) {
                const int32_t ix0 = ox * g->stride_w - g->pad_l;
                int32_t kx_lo, kx_hi;
                nupes_window_taps(ix0, g->k_w, g->in_w, &kx_lo, &kx_hi);
                int32_t acc = w->bias[oc];
                for (ky = ky_lo; ky < ky_hi; ++ky) {
                    const int8_t *px = in_c + (iy0 + ky) * row_stride + (ix0 + kx_lo) * g->in_c;
                    const int16_t *pw = scratch + ky * g->k_w;
                    for (kx = kx_lo; kx < kx_hi; ++kx, px += g->in_c) {
                        acc += (int32_t)pw[kx] * ((int32_t)*px - w->in_zp);
                    }
                }
                acc = nupes_requantize(acc, w->mult[oc], w->shift[oc]) + w->out_zp;
                out[(oy * g->out_w + ox) * g->out_c + oc] = nupes_clamp_s8(acc, w->act_min, w->act_max);
            }
        }
    }
}
