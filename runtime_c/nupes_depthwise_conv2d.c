#include "nupes_fixedpoint.h"
#include "nupes_kernels.h"

void nupes_depthwise_conv2d(const int8_t *in, int8_t *out, const nupes_conv_geom_t *g, const nupes_layer_t *w, int16_t *scratch)
{
    const int32_t k = g->k_h * g->k_w;
    const int32_t mult = g->out_c / g->in_c;
    int32_t oc, oy, ox, ky, kx;
    for (oc = 0; oc < g->out_c; ++oc) {
        const int32_t ic = oc / mult;
        nupes_decode_row(w->packed + oc * w->row_bytes, w->bits, w->lut, k, 1, scratch);
        for (oy = 0; oy < g->out_h; ++oy) {
            const int32_t iy0 = oy * g->stride_h - g->pad_t;
            for (ox = 0; ox < g->out_w; ++ox) {
                const int32_t ix0 = ox * g->stride_w - g->pad_l;
                int32_t acc = w->bias[oc];
                for (ky = 0; ky < g->k_h; ++ky) {
                    const int32_t iy = iy0 + ky;
                    if (iy < 0 || iy >= g->in_h) {
                        continue;
                    }
                    for (kx = 0; kx < g->k_w; ++kx) {
                        const int32_t ix = ix0 + kx;
                        if (ix < 0 || ix >= g->in_w) {
                            continue;
                        }
                        acc += (int32_t)scratch[ky * g->k_w + kx] * ((int32_t)in[(iy * g->in_w + ix) * g->in_c + ic] - w->in_zp);
                    }
                }
                acc = nupes_requantize(acc, w->mult[oc], w->shift[oc]) + w->out_zp;
                out[(oy * g->out_w + ox) * g->out_c + oc] = nupes_clamp_s8(acc, w->act_min, w->act_max);
            }
        }
    }
}
