#include "nupes_dot.h"
#include "nupes_fixedpoint.h"
#include "nupes_kernels.h"
#include "nupes_window.h"

static int8_t nupes_conv_output(int32_t acc, const nupes_layer_t *w, int32_t oc)
{
    acc = nupes_requantize(acc, w->mult[oc], w->shift[oc]) + w->out_zp;
    return nupes_clamp_s8(acc, w->act_min, w->act_max);
}

/*
 * The reference convolution, any shape (every other convolution kernel is tested against it).
 * Loop order: decode output
 * channels' rows once (two at a time), reuse them for every output position. In HWC the k_w taps
 * of one kernel row are contiguous (k_w * c_in inputs), so each kernel row is one dot product over
 * its in-image part (zero padding: the rest contributes x - zp = 0). Two channels share every
 * input load; an odd last channel runs alone.
 */
void nupes_conv2d_ref(const int8_t *in, int8_t *out, const nupes_conv_geom_t *g, const nupes_layer_t *w, int16_t *scratch)
{
    const int32_t run = g->k_w * g->in_c;
    const int32_t k = g->k_h * run;
    int16_t *s1 = scratch + k;
    int32_t oc, oy, ox, ky;
    for (oc = 0; oc < g->out_c; oc += 2) {
        const int32_t pair = oc + 1 < g->out_c;
        nupes_decode_row(w->packed + oc * w->row_bytes, w->bits, w->lut, k, run, scratch);
        if (pair) {
            nupes_decode_row(w->packed + (oc + 1) * w->row_bytes, w->bits, w->lut, k, run, s1);
        }
        for (oy = 0; oy < g->out_h; ++oy) {
            const int32_t iy0 = oy * g->stride_h - g->pad_t;
            int32_t ky_lo, ky_hi;
            nupes_window_taps(iy0, g->k_h, g->in_h, &ky_lo, &ky_hi);
            for (ox = 0; ox < g->out_w; ++ox) {
                const int32_t ix0 = ox * g->stride_w - g->pad_l;
                int32_t kx_lo, kx_hi;
                nupes_window_taps(ix0, g->k_w, g->in_w, &kx_lo, &kx_hi);
                const int32_t start = kx_lo * g->in_c;
                const int32_t n = (kx_hi - kx_lo) * g->in_c;
                const int8_t *px = in + ((iy0 + ky_lo) * g->in_w + ix0 + kx_lo) * g->in_c;
                int8_t *po = out + (oy * g->out_w + ox) * g->out_c + oc;
                int32_t acc0 = w->bias[oc];
                if (pair) {
                    int32_t acc1 = w->bias[oc + 1];
                    for (ky = ky_lo; ky < ky_hi; ++ky, px += g->in_w * g->in_c) {
                        nupes_dot2_run(px, scratch + ky * run, s1 + ky * run, run, start, n, w->in_zp, &acc0, &acc1);
                    }
                    po[1] = nupes_conv_output(acc1, w, oc + 1);
                } else {
                    for (ky = ky_lo; ky < ky_hi; ++ky, px += g->in_w * g->in_c) {
                        acc0 = nupes_dot_run(px, scratch + ky * run, run, start, n, w->in_zp, acc0);
                    }
                }
                po[0] = nupes_conv_output(acc0, w, oc);
            }
        }
    }
}
