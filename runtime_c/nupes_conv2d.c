#include "nupes_dot.h"
#include "nupes_fixedpoint.h"
#include "nupes_kernels.h"

int32_t nupes_conv2d_get_buffer_size(const nupes_conv_geom_t *g)
{
    return g->k_h * g->k_w * g->in_c * (int32_t)sizeof(int16_t);
}

/* Loop order: decode one output channel's row once, reuse it for every output position. */
void nupes_conv2d(const int8_t *in, int8_t *out, const nupes_conv_geom_t *g, const nupes_layer_t *w, int16_t *scratch)
{
    const int32_t k = g->k_h * g->k_w * g->in_c;
    int32_t oc, oy, ox, ky, kx;
    for (oc = 0; oc < g->out_c; ++oc) {
        nupes_decode_row(w->packed + oc * w->row_bytes, w->bits, w->lut, k, g->in_c, scratch);
        for (oy = 0; oy < g->out_h; ++oy) {
            const int32_t iy0 = oy * g->stride_h - g->pad_t;
            for (ox = 0; ox < g->out_w; ++ox) {
                const int32_t ix0 = ox * g->stride_w - g->pad_l;
                int32_t acc = w->bias[oc];
                for (ky = 0; ky < g->k_h; ++ky) {
                    const int32_t iy = iy0 + ky;
                    if (iy < 0 || iy >= g->in_h) {
                        continue; /* zero padding: x - zp = 0 */
                    }
                    for (kx = 0; kx < g->k_w; ++kx) {
                        const int32_t ix = ix0 + kx;
                        if (ix < 0 || ix >= g->in_w) {
                            continue;
                        }
                        acc = nupes_dot_s8_s16(in + (iy * g->in_w + ix) * g->in_c, scratch + (ky * g->k_w + kx) * g->in_c,
                                               g->in_c, w->in_zp, acc);
                    }
                }
                acc = nupes_requantize(acc, w->mult[oc], w->shift[oc]) + w->out_zp;
                out[(oy * g->out_w + ox) * g->out_c + oc] = nupes_clamp_s8(acc, w->act_min, w->act_max);
            }
        }
    }
}
