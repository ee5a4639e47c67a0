#include "nupes_dot.h"
#include "nupes_fixedpoint.h"
#include "nupes_kernels.h"

int32_t nupes_conv2d_window_get_buffer_size(const nupes_conv_geom_t *g)
{
    const int32_t chunk = g->out_c < NUPES_WINDOW_CHUNK ? g->out_c : NUPES_WINDOW_CHUNK;
    return chunk * (((g->k_h * g->k_w * g->in_c + 1) & ~1) * (int32_t)sizeof(int16_t) + (int32_t)sizeof(nupes_rq_t));
}

#if NUPES_USE_DSP
/* Two output channels (rows pw and pw + taps2) against one window: per two taps one window word
 * shared by both channels, two weight words, two SMLAD. */
static inline void nupes_win_dot2(const int16_t *win, const int16_t *pw, int32_t taps2, int32_t *acc0, int32_t *acc1)
{
    int32_t j, a0 = *acc0, a1 = *acc1;
    for (j = 0; j < taps2; j += 2) {
        const int32_t xw = nupes_read32(win + j);
        a0 = nupes_smlad(xw, nupes_read32(pw + j), a0);
        a1 = nupes_smlad(xw, nupes_read32(pw + taps2 + j), a1);
    }
    *acc0 = a0;
    *acc1 = a1;
}
#endif

/* The window of one output position in the weights' (kh, kw, c_in) order: x - zp per tap and
 * channel, 0 for padding (zero in the real domain). */
static void nupes_win_window(const int8_t *in, const nupes_conv_geom_t *g, int32_t zp, int32_t iy0, int32_t ix0, int16_t *win)
{
    const int32_t c_n = g->in_c, row = g->k_w * c_n;
    int32_t ky, kx, j = 0;
    if (iy0 >= 0 && iy0 + g->k_h <= g->in_h && ix0 >= 0 && ix0 + g->k_w <= g->in_w) {
        const int8_t *px = in + (iy0 * g->in_w + ix0) * c_n;
        for (ky = 0; ky < g->k_h; ++ky, px += g->in_w * c_n) {
            for (kx = 0; kx < row; ++kx) { /* a kernel row's taps are contiguous in HWC */
                win[j++] = (int16_t)(px[kx] - zp);
            }
        }
        return;
    }
    for (ky = 0; ky < g->k_h; ++ky) {
        const int32_t iy = iy0 + ky;
        for (kx = 0; kx < g->k_w; ++kx) {
            const int32_t ix = ix0 + kx;
            const int32_t inside = iy >= 0 && iy < g->in_h && ix >= 0 && ix < g->in_w;
            int32_t c;
            for (c = 0; c < c_n; ++c) {
                win[j++] = (int16_t)(inside ? in[(iy * g->in_w + ix) * c_n + c] - zp : 0);
            }
        }
    }
}

/* Output channels [c0, c1) at every position; their levels and requantizations are in scratch. */
static void nupes_win_chunk(const int8_t *in, int8_t *out, const nupes_conv_geom_t *g, const nupes_layer_t *w,
                           const int16_t *levels, const nupes_rq_t *rq, int32_t c0, int32_t c1)
{
    const int32_t taps = g->k_h * g->k_w * g->in_c;
    const int32_t taps2 = (taps + 1) & ~1;
    /* locals: the int8 output stores could alias the layer struct, so fields read in the loop
     * would be reloaded after every store */
    const int32_t out_zp = w->out_zp, act_min = w->act_min, act_max = w->act_max, in_zp = w->in_zp;
    const int32_t *bias = w->bias;
    int16_t win[NUPES_WINDOW_MAX];
    int32_t oc, oy, ox, j;
    win[taps2 - 1] = 0;
    for (oy = 0; oy < g->out_h; ++oy) {
        for (ox = 0; ox < g->out_w; ++ox) {
            int8_t *po = out + (oy * g->out_w + ox) * g->out_c;
            const int16_t *pw = levels;
            nupes_win_window(in, g, in_zp, oy * g->stride_h - g->pad_t, ox * g->stride_w - g->pad_l, win);
#if NUPES_USE_DSP
            if (taps2 == 10) {
                /* 3x3: the window's five words stay in registers for all the chunk's channels;
                 * per channel pair 10 LDR + 10 SMLAD */
                const int32_t x0 = nupes_read32(win), x1 = nupes_read32(win + 2), x2 = nupes_read32(win + 4);
                const int32_t x3 = nupes_read32(win + 6), x4 = nupes_read32(win + 8);
                for (oc = c0; oc + 1 < c1; oc += 2, pw += 20) {
                    int32_t a0 = bias[oc], a1 = bias[oc + 1];
                    a0 = nupes_smlad(x0, nupes_read32(pw), a0);
                    a1 = nupes_smlad(x0, nupes_read32(pw + 10), a1);
                    a0 = nupes_smlad(x1, nupes_read32(pw + 2), a0);
                    a1 = nupes_smlad(x1, nupes_read32(pw + 12), a1);
                    a0 = nupes_smlad(x2, nupes_read32(pw + 4), a0);
                    a1 = nupes_smlad(x2, nupes_read32(pw + 14), a1);
                    a0 = nupes_smlad(x3, nupes_read32(pw + 6), a0);
                    a1 = nupes_smlad(x3, nupes_read32(pw + 16), a1);
                    a0 = nupes_smlad(x4, nupes_read32(pw + 8), a0);
                    a1 = nupes_smlad(x4, nupes_read32(pw + 18), a1);
                    po[oc] = nupes_clamp_s8(nupes_rq_apply(a0, &rq[oc - c0]) + out_zp, act_min, act_max);
                    po[oc + 1] = nupes_clamp_s8(nupes_rq_apply(a1, &rq[oc + 1 - c0]) + out_zp, act_min, act_max);
                }
            } else
#endif
            for (oc = c0; oc + 1 < c1; oc += 2, pw += 2 * taps2) {
                int32_t acc0 = bias[oc], acc1 = bias[oc + 1];
#if NUPES_USE_DSP
                nupes_win_dot2(win, pw, taps2, &acc0, &acc1);
#else
                for (j = 0; j < taps; ++j) {
                    acc0 += (int32_t)pw[j] * win[j];
                    acc1 += (int32_t)pw[taps2 + j] * win[j];
                }
#endif
                po[oc] = nupes_clamp_s8(nupes_rq_apply(acc0, &rq[oc - c0]) + out_zp, act_min, act_max);
                po[oc + 1] = nupes_clamp_s8(nupes_rq_apply(acc1, &rq[oc + 1 - c0]) + out_zp, act_min, act_max);
            }
            if (oc < c1) { /* an odd last channel */
                int32_t acc = bias[oc];
                for (j = 0; j < taps; ++j) {
                    acc += (int32_t)pw[j] * win[j];
                }
                po[oc] = nupes_clamp_s8(nupes_rq_apply(acc, &rq[oc - c0]) + out_zp, act_min, act_max);
            }
        }
    }
}

/*
 * Convolution of an input with few channels (a first layer: 1 to 4 channels), with
 * k_h * k_w * in_c <= NUPES_WINDOW_MAX. The general kernel's dot product over one kernel row is
 * only k_w * in_c long here, so instead the
 * output channels' levels are decoded once, NUPES_WINDOW_CHUNK channels at a time (scratch: their
 * rows of k_h*k_w levels, padded to even, then their precomputed requantizations), and per output
 * position the window (x - zp, 0 for padding) is built once per chunk as int16 pairs and reused
 * by the chunk's channels, two per step: one SMLAD per two taps and channel, plus the fused
 * requantization of each output.
 */
void nupes_conv2d_window(const int8_t *in, int8_t *out, const nupes_conv_geom_t *g, const nupes_layer_t *w, int16_t *scratch)
{
    const int32_t taps = g->k_h * g->k_w * g->in_c;
    const int32_t taps2 = (taps + 1) & ~1;
    const int32_t chunk = g->out_c < NUPES_WINDOW_CHUNK ? g->out_c : NUPES_WINDOW_CHUNK;
    nupes_rq_t *rq = (nupes_rq_t *)(void *)(scratch + chunk * taps2); /* taps2 even: 4-byte aligned */
    int32_t c0, oc;
    for (c0 = 0; c0 < g->out_c; c0 += chunk) {
        const int32_t c1 = c0 + chunk < g->out_c ? c0 + chunk : g->out_c;
        for (oc = c0; oc < c1; ++oc) {
            int16_t *row = scratch + (oc - c0) * taps2;
            nupes_decode_row(w->packed + oc * w->row_bytes, w->bits, w->lut, taps, 1, row);
            if (taps2 > taps) {
                row[taps] = 0;
            }
            nupes_rq_init(&rq[oc - c0], w->mult[oc], w->shift[oc]);
        }
        nupes_win_chunk(in, out, g, w, scratch, rq, c0, c1);
    }
}
