#include "nupes_dot.h"
#include "nupes_fixedpoint.h"
#include "nupes_kernels.h"
#include "nupes_window.h"

int32_t nupes_conv2d_c1_get_buffer_size(const nupes_conv_geom_t *g)
{
    return g->out_c * ((g->k_h * g->k_w + 1) & ~1) * (int32_t)sizeof(int16_t);
}

/*
 * Convolution of a single-channel input (a first layer), k_h * k_w <= NUPES_C1_MAX_TAPS.
 * The general kernel's dot product over one kernel row is only k_w long here, so instead every
 * output channel's levels are decoded once (scratch: out_c rows of k_h*k_w levels, padded to
 * even), and per output position the window (x - zp, 0 for padding) is built once as int16 pairs
 * and reused by all output channels: one SMLAD per two taps, about 1.5 instructions per MAC plus
 * the requantization of each output.
 */
void nupes_conv2d_c1(const int8_t *in, int8_t *out, const nupes_conv_geom_t *g, const nupes_layer_t *w, int16_t *scratch)
{
    const int32_t taps = g->k_h * g->k_w;
    const int32_t taps2 = (taps + 1) & ~1;
    int16_t win[NUPES_C1_MAX_TAPS];
    int32_t oc, oy, ox, ky, kx, j;
    for (oc = 0; oc < g->out_c; ++oc) {
        nupes_decode_row(w->packed + oc * w->row_bytes, w->bits, w->lut, taps, 1, scratch + oc * taps2);
        if (taps2 > taps) {
            scratch[oc * taps2 + taps] = 0;
        }
    }
    win[taps2 - 1] = 0;
    for (oy = 0; oy < g->out_h; ++oy) {
        const int32_t iy0 = oy * g->stride_h - g->pad_t;
        for (ox = 0; ox < g->out_w; ++ox) {
            const int32_t ix0 = ox * g->stride_w - g->pad_l;
            int8_t *po = out + (oy * g->out_w + ox) * g->out_c;
            const int16_t *pw = scratch;
            for (ky = 0, j = 0; ky < g->k_h; ++ky) {
                const int32_t iy = iy0 + ky;
                for (kx = 0; kx < g->k_w; ++kx, ++j) {
                    const int32_t ix = ix0 + kx;
                    /* padding is zero in the real domain: x - zp = 0 */
                    win[j] = (int16_t)(iy >= 0 && iy < g->in_h && ix >= 0 && ix < g->in_w ? in[iy * g->in_w + ix] - w->in_zp : 0);
                }
            }
            for (oc = 0; oc < g->out_c; ++oc, pw += taps2) {
                int32_t acc = w->bias[oc];
#if NUPES_USE_DSP
                for (j = 0; j < taps2; j += 2) {
                    acc = nupes_smlad(nupes_read32(win + j), nupes_read32(pw + j), acc);
                }
#else
                for (j = 0; j < taps; ++j) {
                    acc += (int32_t)pw[j] * win[j];
                }
#endif
                acc = nupes_requantize(acc, w->mult[oc], w->shift[oc]) + w->out_zp;
                po[oc] = nupes_clamp_s8(acc, w->act_min, w->act_max);
            }
        }
    }
}
