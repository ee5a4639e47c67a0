#include "nupes_dot.h"
#include "nupes_fixedpoint.h"
#include "nupes_kernels.h"
#include "nupes_window.h"

int32_t nupes_conv2d_get_buffer_size(const nupes_conv_geom_t *g)
{
    return 2 * g->k_h * g->k_w * g->in_c * (int32_t)sizeof(int16_t); /* two decoded channels */
}

static int8_t nupes_conv_output(int32_t acc, const nupes_layer_t *w, int32_t oc)
{
    acc = nupes_requantize(acc, w->mult[oc], w->shift[oc]) + w->out_zp;
    return nupes_clamp_s8(acc, w->act_min, w->act_max);
}

#if NUPES_USE_DSP
/* Taps (ky, kx) whose input sums the zero-point correction can hold on the stack. */
#define NUPES_CONV_MAX_TAPS 64

/* Sum of each kernel tap's in_c levels (levels of a tap are contiguous: in_c % 4 == 0 keeps
 * the DSP group order inside a tap). Two levels per SMLAD against (1, 1). */
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

/* The taps [lo, hi) of the kernel row at ky for one position whose first input is x. */
static inline void nupes_taps21(const int8_t *x, const int16_t *w0, const int16_t *w1, int32_t in_c, int32_t lo,
                                int32_t hi, int32_t *acc0, int32_t *acc1)
{
    if (hi > lo) {
        nupes_dot21_groups(x + lo * in_c, w0 + lo * in_c, w1 + lo * in_c, (hi - lo) * in_c, acc0, acc1);
    }
}

/*
 * DSP path for in_c % 4 == 0: the input zero point is folded out of the inner loop
 * (sum w*(x - zp) = sum w*x - zp*sum w, the second term per channel from tap sums, exact at the
 * border where out-of-image taps are skipped), and two output channels x two output positions
 * share every load (nupes_dot22_run, ~1.3 instructions per MAC) over the taps both positions
 * have inside the image; a border position's other taps run two channels x one position.
 * Partial sums of w*x stay within 128 * sum|w| <= acc_bound, and the correction is added last,
 * so nothing can overflow int32.
 */
static void nupes_conv2d_dsp(const int8_t *in, int8_t *out, const nupes_conv_geom_t *g, const nupes_layer_t *w,
                             int16_t *scratch)
{
    const int32_t in_c = g->in_c;
    const int32_t run = g->k_w * in_c;
    const int32_t k = g->k_h * run;
    const int32_t taps = g->k_h * g->k_w;
    const int32_t row_stride = g->in_w * in_c;
    const int32_t zp = w->in_zp;
    int16_t *s1 = scratch + k;
    int32_t sums0[NUPES_CONV_MAX_TAPS], sums1[NUPES_CONV_MAX_TAPS];
    int32_t oc, oy, ox, ky;
    for (oc = 0; oc < g->out_c; oc += 2) {
        const int32_t pair = oc + 1 < g->out_c;
        const int32_t oc1 = pair ? oc + 1 : oc; /* an odd last channel runs as its own twin */
        nupes_decode_row(w->packed + oc * w->row_bytes, w->bits, w->lut, k, run, scratch);
        nupes_decode_row(w->packed + oc1 * w->row_bytes, w->bits, w->lut, k, run, s1);
        nupes_tap_sums(scratch, taps, in_c, sums0);
        nupes_tap_sums(s1, taps, in_c, sums1);
        for (oy = 0; oy < g->out_h; ++oy) {
            const int32_t iy0 = oy * g->stride_h - g->pad_t;
            int32_t ky_lo, ky_hi, rows0, rows1;
            nupes_window_taps(iy0, g->k_h, g->in_h, &ky_lo, &ky_hi);
            /* the correction of a position with every tap along x inside the image */
            rows0 = nupes_window_sum(sums0, g->k_w, ky_lo, ky_hi, 0, g->k_w);
            rows1 = nupes_window_sum(sums1, g->k_w, ky_lo, ky_hi, 0, g->k_w);
            for (ox = 0; ox < g->out_w; ox += 2) {
                const int32_t two = ox + 1 < g->out_w;
                const int32_t ia = ox * g->stride_w - g->pad_l, ib = ia + g->stride_w;
                int32_t la, ha, lb = 0, hb = 0, lc, hc, p;
                int32_t acc[4] = {0, 0, 0, 0};
                int8_t *po = out + (oy * g->out_w + ox) * g->out_c + oc;
                const int8_t *row = in + (iy0 + ky_lo) * row_stride;
                nupes_window_taps(ia, g->k_w, g->in_w, &la, &ha);
                if (two) {
                    nupes_window_taps(ib, g->k_w, g->in_w, &lb, &hb);
                }
                lc = la > lb ? la : lb; /* taps both positions have */
                hc = ha < hb ? ha : hb;
                for (ky = ky_lo; ky < ky_hi; ++ky, row += row_stride) {
                    const int16_t *w0 = scratch + ky * run, *w1 = s1 + ky * run;
                    const int8_t *xa = row + ia * in_c, *xb = row + ib * in_c;
                    if (two && hc > lc) {
                        nupes_dot22_run(xa + lc * in_c, xb + lc * in_c, w0 + lc * in_c, w1 + lc * in_c, (hc - lc) * in_c, acc);
                        nupes_taps21(xa, w0, w1, in_c, la, lc, &acc[0], &acc[2]);
                        nupes_taps21(xa, w0, w1, in_c, hc, ha, &acc[0], &acc[2]);
                        nupes_taps21(xb, w0, w1, in_c, lb, lc, &acc[1], &acc[3]);
                        nupes_taps21(xb, w0, w1, in_c, hc, hb, &acc[1], &acc[3]);
                    } else {
                        nupes_taps21(xa, w0, w1, in_c, la, ha, &acc[0], &acc[2]);
                        if (two) {
                            nupes_taps21(xb, w0, w1, in_c, lb, hb, &acc[1], &acc[3]);
                        }
                    }
                }
                for (p = 0; p <= two; ++p) {
                    const int32_t lo = p ? lb : la, hi = p ? hb : ha;
                    const int32_t inside = lo == 0 && hi == g->k_w;
                    const int32_t c0 = inside ? rows0 : nupes_window_sum(sums0, g->k_w, ky_lo, ky_hi, lo, hi);
                    const int32_t c1 = inside ? rows1 : nupes_window_sum(sums1, g->k_w, ky_lo, ky_hi, lo, hi);
                    po[p * g->out_c] = nupes_conv_output(acc[p] + (w->bias[oc] - zp * c0), w, oc);
                    if (pair) {
                        po[p * g->out_c + 1] = nupes_conv_output(acc[2 + p] + (w->bias[oc1] - zp * c1), w, oc1);
                    }
                }
            }
        }
    }
}
#endif

/*
 * Reference loop order (portable path, and the DSP path when in_c % 4 != 0): decode output
 * channels' rows once (two at a time), reuse them for every output position. In HWC the k_w taps
 * of one kernel row are contiguous (k_w * c_in inputs), so each kernel row is one dot product over
 * its in-image part (zero padding: the rest contributes x - zp = 0). Two channels share every
 * input load; an odd last channel runs alone.
 */
void nupes_conv2d(const int8_t *in, int8_t *out, const nupes_conv_geom_t *g, const nupes_layer_t *w, int16_t *scratch)
{
    const int32_t run = g->k_w * g->in_c;
    const int32_t k = g->k_h * run;
    int16_t *s1 = scratch + k;
    int32_t oc, oy, ox, ky;
#if NUPES_USE_DSP
    if (g->in_c % 4 == 0 && g->k_h * g->k_w <= NUPES_CONV_MAX_TAPS) {
        nupes_conv2d_dsp(in, out, g, w, scratch);
        return;
    }
#endif
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
