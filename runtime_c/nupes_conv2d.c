#include "nupes_dot.h"
#include "nupes_fixedpoint.h"
#include "nupes_kernels.h"
#include "nupes_window.h"

int32_t nupes_conv2d_get_buffer_size(const nupes_conv_geom_t *g)
{
    return 2 * g->k_h * g->k_w * g->in_c * (int32_t)sizeof(int16_t); /* two decoded channels */
}


#if NUPES_USE_DSP
/* Taps (ky, kx) whose input sums the zero-point correction can hold on the stack. */
#define NUPES_CONV_MAX_TAPS 64

/* Sum of each kernel tap's in_c levels (in_c % 4 == 0: a tap's levels are whole DSP groups, so
 * their order inside the tap does not matter). Two levels per SMLAD against (1, 1). */
static void nupes_tap_sums(const int16_t *w, int32_t taps, int32_t in_c, int32_t *sums)
{
    int32_t t, j;
    for (t = 0; t < taps; ++t, w += in_c) {
        int32_t s = 0;
        for (j = 0; j < in_c; j += 2) {
            s = nupes_smlad(nupes_read32(w + j), 0x00010001, s);
        }
        sums[t] = s;
    }
}

/* Taps [lo, hi) of one kernel row for one position, two channels, no zero point (whole groups). */
static NUPES_NOINLINE void nupes_taps21(const int8_t *x, const int16_t *v0, const int16_t *v1, int32_t in_c, int32_t lo,
                                        int32_t hi, int32_t *acc0, int32_t *acc1)
{
    if (hi > lo) {
        nupes_dot21_groups(x + lo * in_c, v0 + lo * in_c, v1 + lo * in_c, (hi - lo) * in_c, acc0, acc1);
    }
}

/* zp * (sum of the levels of the taps inside the image): what the folded zero point removes. */
static int32_t nupes_window_sum(const int32_t *sums, int32_t k_w, int32_t ky_lo, int32_t ky_hi, int32_t kx_lo,
                                int32_t kx_hi)
{
    int32_t s = 0, ky, kx;
    for (ky = ky_lo; ky < ky_hi; ++ky) {
        for (kx = kx_lo; kx < kx_hi; ++kx) {
            s += sums[ky * k_w + kx];
        }
    }
    return s;
}

/* One output channel's constants, read once per channel pair instead of once per output. */
typedef struct {
    int32_t bias; /* bias - zp * (sum of the levels of the in-image taps), per output row */
    nupes_rq_t rq;
    int32_t out_zp, lo, hi; /* copies: int8 output stores may alias the layer struct */
} nupes_conv_chan_t;

static void nupes_conv_chan(nupes_conv_chan_t *c, const nupes_layer_t *w, int32_t oc)
{
    nupes_rq_init(&c->rq, w->mult[oc], w->shift[oc]);
    c->out_zp = w->out_zp;
    c->lo = w->act_min;
    c->hi = w->act_max;
}

/* Requantization (fused, one SMLAL), zero point and clamp: about 10 instructions. */
static inline int8_t nupes_conv_out(int32_t acc, const nupes_conv_chan_t *c)
{
    return nupes_clamp_s8(nupes_rq_apply(acc, &c->rq) + c->out_zp, c->lo, c->hi);
}

/* One position whose window crosses the left or right border, both channels: the in-image taps
 * of each kernel row (two channels x one position, no zero point), then the exact correction for
 * exactly those taps. Rare (the border columns), so kept out of the main loop. */
static void nupes_conv2d_dsp_edge(const int8_t *row, int32_t ix0, int32_t ky_lo, int32_t ky_hi,
                                  const nupes_conv_geom_t *g, const nupes_layer_t *w, const int16_t *w0,
                                  const int16_t *w1, const int32_t *sums0, const int32_t *sums1,
                                  const nupes_conv_chan_t *c0, const nupes_conv_chan_t *c1, int32_t oc, int8_t *po)
{
    const int32_t in_c = g->in_c, run = g->k_w * in_c, row_stride = g->in_w * in_c;
    int32_t kx_lo, kx_hi, ky, acc0 = 0, acc1 = 0;
    nupes_window_taps(ix0, g->k_w, g->in_w, &kx_lo, &kx_hi);
    row += ix0 * in_c;
    for (ky = ky_lo; ky < ky_hi; ++ky, row += row_stride) {
        nupes_taps21(row, w0 + ky * run, w1 + ky * run, in_c, kx_lo, kx_hi, &acc0, &acc1);
    }
    acc0 += w->bias[oc] - w->in_zp * nupes_window_sum(sums0, g->k_w, ky_lo, ky_hi, kx_lo, kx_hi);
    po[0] = nupes_conv_out(acc0, c0);
    if (oc + 1 < g->out_c) {
        acc1 += w->bias[oc + 1] - w->in_zp * nupes_window_sum(sums1, g->k_w, ky_lo, ky_hi, kx_lo, kx_hi);
        po[1] = nupes_conv_out(acc1, c1);
    }
}

/* Two positions (x origins ia, ia + stride) of which at least one crosses the left or right
 * border: the taps both have inside the image run two channels x two positions, the others two
 * channels x one position; each output gets the correction for exactly its own taps. */
static void nupes_conv2d_dsp_edge2(const int8_t *row, int32_t ia, int32_t ky_lo, int32_t ky_hi,
                                   const nupes_conv_geom_t *g, const nupes_layer_t *w, const int16_t *w0,
                                   const int16_t *w1, const int32_t *sums0, const int32_t *sums1,
                                   const nupes_conv_chan_t *c0, const nupes_conv_chan_t *c1, int32_t oc, int8_t *po)
{
    const int32_t in_c = g->in_c, run = g->k_w * in_c, row_stride = g->in_w * in_c;
    const int32_t ib = ia + g->stride_w;
    int32_t lo[2], hi[2], lc, hc, ky, p, acc[4] = {0, 0, 0, 0};
    nupes_window_taps(ia, g->k_w, g->in_w, &lo[0], &hi[0]);
    nupes_window_taps(ib, g->k_w, g->in_w, &lo[1], &hi[1]);
    lc = lo[0] > lo[1] ? lo[0] : lo[1];
    hc = hi[0] < hi[1] ? hi[0] : hi[1];
    if (hc < lc) {
        hc = lc;
    }
    for (ky = ky_lo; ky < ky_hi; ++ky, row += row_stride) {
        const int16_t *v0 = w0 + ky * run, *v1 = w1 + ky * run;
        if (hc > lc) {
            nupes_dot22_run(row + (ia + lc) * in_c, row + (ib + lc) * in_c, v0 + lc * in_c, v1 + lc * in_c,
                            (hc - lc) * in_c, acc);
        }
        for (p = 0; p < 2; ++p) {
            const int8_t *x = row + (p ? ib : ia) * in_c;
            nupes_taps21(x, v0, v1, in_c, lo[p], lc < hi[p] ? lc : hi[p], &acc[p], &acc[2 + p]);
            nupes_taps21(x, v0, v1, in_c, hc > lo[p] ? hc : lo[p], hi[p], &acc[p], &acc[2 + p]);
        }
    }
    for (p = 0; p < 2; ++p) {
        const int32_t full = lo[p] == 0 && hi[p] == g->k_w;
        const int32_t b0 = full ? c0->bias
                                : w->bias[oc] - w->in_zp * nupes_window_sum(sums0, g->k_w, ky_lo, ky_hi, lo[p], hi[p]);
        po[p * g->out_c] = nupes_conv_out(acc[p] + b0, c0);
        if (oc + 1 < g->out_c) {
            const int32_t b1 = full ? c1->bias
                                    : w->bias[oc + 1] - w->in_zp * nupes_window_sum(sums1, g->k_w, ky_lo, ky_hi, lo[p], hi[p]);
            po[p * g->out_c + 1] = nupes_conv_out(acc[2 + p] + b1, c1);
        }
    }
}

/*
 * DSP path for in_c % 4 == 0 (inputs with 1 to 4 channels get nupes_conv2d_window; other
 * channel counts take the reference loop below): the input zero point is folded out of the inner loop
 * (sum w*(x - zp) = sum w*x - zp*sum w, the second term per channel from tap sums, exact at the
 * border where out-of-image taps are skipped), and two output channels x two output positions
 * share every load (nupes_dot22_run, ~1.3 instructions per MAC) for every pair of positions whose
 * windows lie inside the image along x; pairs at the border share the taps both have
 * (nupes_conv2d_dsp_edge2), and an odd last column runs alone.
 * Partial sums of w*x stay within 128 * sum|w| <= acc_bound, and the correction is added last,
 * so nothing can overflow int32.
 */
static void nupes_conv2d_dsp(const int8_t *in, int8_t *out, const nupes_conv_geom_t *g, const nupes_layer_t *w,
                             int16_t *scratch)
{
    const int32_t in_c = g->in_c;
    const int32_t run = g->k_w * in_c;
    const int32_t k = g->k_h * run;
    const int32_t row_stride = g->in_w * in_c;
    const int32_t step = g->stride_w * in_c;
    /* output columns whose window lies inside the image along x */
    const int32_t x_first = (g->pad_l + g->stride_w - 1) / g->stride_w;
    const int32_t x_last = (g->in_w - g->k_w + g->pad_l) / g->stride_w; /* may be < x_first */
    const int32_t n_inside = x_last >= x_first ? x_last - x_first + 1 : 0;
    int16_t *s1 = scratch + k;
    int32_t sums0[NUPES_CONV_MAX_TAPS], sums1[NUPES_CONV_MAX_TAPS];
    nupes_conv_chan_t c0, c1;
    int32_t oc, oy, ox, ky;
    for (oc = 0; oc < g->out_c; oc += 2) {
        const int32_t pair = oc + 1 < g->out_c;
        const int32_t oc1 = pair ? oc + 1 : oc; /* an odd last channel runs as its own twin */
        nupes_decode_row(w->packed + oc * w->row_bytes, w->bits, w->lut, k, run, scratch);
        nupes_decode_row(w->packed + oc1 * w->row_bytes, w->bits, w->lut, k, run, s1);
        nupes_tap_sums(scratch, g->k_h * g->k_w, in_c, sums0);
        nupes_tap_sums(s1, g->k_h * g->k_w, in_c, sums1);
        nupes_conv_chan(&c0, w, oc);
        nupes_conv_chan(&c1, w, oc1);
        for (oy = 0; oy < g->out_h; ++oy) {
            const int32_t iy0 = oy * g->stride_h - g->pad_t;
            int32_t ky_lo, ky_hi;
            const int8_t *row;
            int8_t *po = out + oy * g->out_w * g->out_c + oc;
            nupes_window_taps(iy0, g->k_h, g->in_h, &ky_lo, &ky_hi);
            row = in + (iy0 + ky_lo) * row_stride;
            c0.bias = w->bias[oc] - w->in_zp * nupes_window_sum(sums0, g->k_w, ky_lo, ky_hi, 0, g->k_w);
            c1.bias = w->bias[oc1] - w->in_zp * nupes_window_sum(sums1, g->k_w, ky_lo, ky_hi, 0, g->k_w);
            for (ox = 0; ox < g->out_w; ++ox) {
                const int32_t ix0 = ox * g->stride_w - g->pad_l;
                const int32_t in_a = ox >= x_first && ox <= x_last, in_b = ox + 1 >= x_first && ox + 1 <= x_last;
                if (in_a && in_b) {
                    /* two positions, every tap of both inside the image along x */
                    int32_t acc[4] = {0, 0, 0, 0};
                    const int8_t *px = row + ix0 * in_c;
                    int8_t *pp = po + ox * g->out_c;
                    for (ky = ky_lo; ky < ky_hi; ++ky, px += row_stride) {
                        nupes_dot22_run(px, px + step, scratch + ky * run, s1 + ky * run, run, acc);
                    }
                    pp[0] = nupes_conv_out(acc[0] + c0.bias, &c0);
                    pp[g->out_c] = nupes_conv_out(acc[1] + c0.bias, &c0);
                    if (pair) {
                        pp[1] = nupes_conv_out(acc[2] + c1.bias, &c1);
                        pp[g->out_c + 1] = nupes_conv_out(acc[3] + c1.bias, &c1);
                    }
                    ++ox;
                } else if (ox + 1 < g->out_w && (in_a || !in_b || n_inside % 2 == 1)) {
                    /* a border pair; a last border column before the interior joins it only when
                     * that leaves the interior an even number of columns */
                    nupes_conv2d_dsp_edge2(row, ix0, ky_lo, ky_hi, g, w, scratch, s1, sums0, sums1, &c0, &c1, oc,
                                           po + ox * g->out_c);
                    ++ox;
                } else {
                    nupes_conv2d_dsp_edge(row, ix0, ky_lo, ky_hi, g, w, scratch, s1, sums0, sums1, &c0, &c1, oc,
                                          po + ox * g->out_c);
                }
            }
        }
    }
}
#endif

/*
 * DSP builds: the fast path above, for in_c % 4 == 0 and at most NUPES_CONV_MAX_TAPS taps (the
 * code generator gives other convolutions nupes_conv2d_ref, so the reference loop is not linked
 * into firmware that does not need it). Portable builds: the reference loop.
 */
void nupes_conv2d(const int8_t *in, int8_t *out, const nupes_conv_geom_t *g, const nupes_layer_t *w, int16_t *scratch)
{
#if NUPES_USE_DSP
    nupes_conv2d_dsp(in, out, g, w, scratch);
#else
    nupes_conv2d_ref(in, out, g, w, scratch);
#endif
}
