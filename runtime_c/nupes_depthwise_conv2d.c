#include <string.h>

#include "nupes_dsp.h"
#include "nupes_fixedpoint.h"
#include "nupes_kernels.h"
#include "nupes_window.h"

/* Fast path (DSP, multiplier 1): kernels up to this many taps (the group's levels live on the stack). */
#define NUPES_DW_MAX_TAPS 25

int32_t nupes_depthwise_conv2d_get_buffer_size(const nupes_conv_geom_t *g)
{
    return g->k_h * g->k_w * (int32_t)sizeof(int16_t);
}

static inline int8_t nupes_dw_output(int32_t acc, const nupes_layer_t *w, int32_t oc)
{
    acc = nupes_requantize(acc, w->mult[oc], w->shift[oc]) + w->out_zp;
    return nupes_clamp_s8(acc, w->act_min, w->act_max);
}

/* Output channels [oc_lo, oc_hi), channel-outer: output channel oc reads input channel oc / multiplier;
 * its k_h * k_w levels are decoded once and reused for every output position. Taps outside the
 * image (zero padding) are skipped. The portable path, and on the DSP path the one for
 * multiplier > 1 and for the last out_c % 4 channels. */
static void nupes_dw_channels(const int8_t *in, int8_t *out, const nupes_conv_geom_t *g, const nupes_layer_t *w,
                              int16_t *scratch, int32_t oc_lo, int32_t oc_hi)
{
    const int32_t mult = g->out_c / g->in_c;
    const int32_t row_stride = g->in_w * g->in_c;
    int32_t oc, oy, ox, ky, kx;
    for (oc = oc_lo; oc < oc_hi; ++oc) {
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
                out[(oy * g->out_w + ox) * g->out_c + oc] = nupes_dw_output(acc, w, oc);
            }
        }
    }
}

#if NUPES_USE_DSP
/*
 * Fast path, multiplier 1: one group of four channels at a time (channels [0, out_c & ~3)), every
 * output position; one 32-bit load brings a tap's four inputs (HWC). The output plane is covered
 * by runs of positions that share one window shape (which kernel taps lie inside the image): each
 * interior row, the top and bottom rows' middle stretches, the left and right columns' middle
 * stretches, and the corners one position at a time. A run's bias is bias - in_zp * (sum of the
 * levels of its in-image taps), so the inner loops multiply raw inputs: sum w * (x - in_zp) over
 * those taps = sum w * x - in_zp * sum w. Every partial sum of a run is the accumulator of some
 * int8 input (0 on the taps not yet added), so it stays within acc_bound.
 */

/* The run routine stays a real function: inlined into the loops over runs, their live values
 * crowd the accumulators out of the registers. Only a code-generation hint. */
/*
 * Requantization of one channel with a right shift e = -shift in [2, 23], precomputed, out_zp
 * included: exactly nupes_requantize(acc, mult, shift) + out_zp with one SMLAL and one shift.
 * With r = SRDHM(acc, mult) = floor((acc * mult + 2^30) / 2^31), TFLite's RDBPOT(r, e) =
 * floor((r + 2^(e-1) - [r < 0]) / 2^e) (ties away from zero), and nested floors merge:
 *     requantize + out_zp = floor(N / 2^(31+e)),
 *     N = acc * mult + 2^30 - [r < 0] * 2^31 + 2^(30+e) + out_zp * 2^(31+e),
 * and as 2^(30+e) + out_zp * 2^(31+e) = k_hi * 2^32 (e >= 2), N's constant part has the lower
 * word 0x40000000 (r >= 0) or 0xC0000000 with a borrow of 1 from k_hi (r < 0); the result is
 * hi >> (e - 1), hi the upper word of N. [r < 0] may be read as [acc < 0] (mult >= 0): they
 * differ only when -2^30 <= acc * mult < 0, where r = 0 and, without the out_zp term, N lies in
 * [0, 2^(31+e)) either way, so the result is out_zp either way. Ranges: |acc * mult| < 2^62,
 * |2^(30+e) + out_zp * 2^(31+e)| < 2^62 (e <= 23), so N fits int64 and hi int32.
 */
typedef struct {
    int32_t k_hi; /* 2^(e-2) + out_zp * 2^(e-1) */
    int32_t mult; /* TFLite mantissa, >= 0 */
    int32_t sh;   /* e - 1 */
} nupes_dw_rq_t;

/* The constants of one channel; 0 if its shift is outside the fast form's range. */
static int nupes_dw_rq_init(nupes_dw_rq_t *q, int32_t mult, int32_t shift, int32_t out_zp)
{
    const int32_t e = -shift;
    if (e < 2 || e > 23) {
        return 0;
    }
    q->k_hi = (1 << (e - 2)) + out_zp * (1 << (e - 1));
    q->mult = mult;
    q->sh = e - 1;
    return 1;
}

static inline int32_t nupes_dw_requant(int32_t acc, const nupes_dw_rq_t *q)
{
    const uint32_t lo = ((uint32_t)acc & 0x80000000u) | 0x40000000u;
    const int32_t hi = q->k_hi - (int32_t)((uint32_t)acc >> 31);
    const int64_t num = (int64_t)(((uint64_t)(uint32_t)hi << 32) | lo) + (int64_t)acc * q->mult;
    return (int32_t)(num >> 32) >> q->sh;
}

typedef struct {
    int32_t wq[2 * NUPES_DW_MAX_TAPS]; /* tap t: word 2t = (c0, c2), word 2t+1 = (c1, c3) (low, high
                                          halves): the order SXTB16 / SXTB16 ROR 8 unpack 4 inputs */
    nupes_dw_rq_t rq[4];
    int32_t lo4, hi4;      /* act_min, act_max in each byte */
    int32_t fast_rq;       /* every channel of the group has 2 <= e <= 23 */
    const nupes_layer_t *w; /* bias / mult / shift advanced to the group (for nupes_requantize) */
    int32_t k_h, k_w, in_c, row_stride;
    /* the current run: */
    int32_t bias[4];  /* bias - in_zp * (sum of the levels of the in-image taps) */
    int32_t rows, cols, first; /* in-image taps: rows x cols from tap `first` */
    int32_t px_step, po_step;  /* from one position of the run to the next: input, output bytes */
} nupes_dw_ctx_t;

static void nupes_dw_setup(const nupes_conv_geom_t *g, const nupes_layer_t *w, int32_t oc, int16_t *lv,
                           nupes_dw_ctx_t *x)
{
    const int32_t taps = g->k_h * g->k_w;
    int32_t j, t;
    x->k_h = g->k_h;
    x->k_w = g->k_w;
    x->in_c = g->in_c;
    x->row_stride = g->in_w * g->in_c;
    x->lo4 = (int32_t)((uint32_t)(uint8_t)w->act_min * 0x01010101u);
    x->hi4 = (int32_t)((uint32_t)(uint8_t)w->act_max * 0x01010101u);
    x->fast_rq = 1;
    for (j = 0; j < 4; ++j) {
        int32_t *word = x->wq + (j & 1);
        nupes_decode_row(w->packed + (oc + j) * w->row_bytes, w->bits, w->lut, taps, 1, lv);
        for (t = 0; t < taps; ++t, word += 2) {
            const uint32_t v = (uint16_t)lv[t];
            *word = (int32_t)(j < 2 ? v : ((uint32_t)*word | (v << 16)));
        }
        x->fast_rq &= nupes_dw_rq_init(&x->rq[j], w->mult[oc + j], w->shift[oc + j], w->out_zp);
    }
}

/* acc[j] += w * (-in_zp) over one tap's levels pw (nzp2: -in_zp in both halves). */
#define NUPES_DW_ZP_TAP(nzp2, pw)                                                                                      \
    do {                                                                                                               \
        const int32_t w02_ = (pw)[0], w13_ = (pw)[1];                                                                  \
        a0 = nupes_smlabb(nzp2, w02_, a0);                                                                             \
        a2 = nupes_smlatt(nzp2, w02_, a2);                                                                             \
        a1 = nupes_smlabb(nzp2, w13_, a1);                                                                             \
        a3 = nupes_smlatt(nzp2, w13_, a3);                                                                             \
    } while (0)

/* The run's window shape: in-image taps [ky_lo, ky_hi) x [kx_lo, kx_hi), and its bias
 * bias - in_zp * (sum of their levels): an achievable accumulator, within acc_bound. */
static void nupes_dw_shape(nupes_dw_ctx_t *x, int32_t ky_lo, int32_t ky_hi, int32_t kx_lo, int32_t kx_hi)
{
    const int32_t nzp = -x->w->in_zp; /* -127..128: an int16 lane */
    const int32_t nzp2 = (int32_t)(((uint32_t)(uint16_t)nzp) | ((uint32_t)(uint16_t)nzp << 16));
    int32_t a0 = x->w->bias[0], a1 = x->w->bias[1], a2 = x->w->bias[2], a3 = x->w->bias[3];
    int32_t ky, kx;
    x->rows = ky_hi > ky_lo ? ky_hi - ky_lo : 0;
    x->cols = kx_hi > kx_lo ? kx_hi - kx_lo : 0;
    x->first = x->rows && x->cols ? ky_lo * x->k_w + kx_lo : 0;
    for (ky = ky_lo; ky < ky_hi; ++ky) {
        for (kx = kx_lo; kx < kx_hi; ++kx) {
            NUPES_DW_ZP_TAP(nzp2, x->wq + 2 * (ky * x->k_w + kx));
        }
    }
    x->bias[0] = a0;
    x->bias[1] = a1;
    x->bias[2] = a2;
    x->bias[3] = a3;
}

/*
 * One tap of the four channels: acc[j] += w * x. LDR (4 inputs), LDRD or 2 LDR (4 levels),
 * 2 SXTB16, 4 SMLAxy (one 16x16 product per channel: SMLAD would add two channels' products):
 * 8 or 9 instructions for 4 MACs, plus the input pointer's step. Storing two taps of a channel as
 * a pair for SMLAD needs 4 PKHBT/PKHTB per 2 taps x 4 channels: 16 instructions per 8 MACs, no
 * better, and a 3-wide kernel row leaves an odd tap.
 */
#define NUPES_DW_TAP(x4, pw)                                                                                           \
    do {                                                                                                               \
        const int32_t x02_ = nupes_sxtb16(x4), x13_ = nupes_sxtb16_ror8(x4);                                           \
        const int32_t w02_ = (pw)[0], w13_ = (pw)[1];                                                                  \
        a0 = nupes_smlabb(x02_, w02_, a0);                                                                             \
        a2 = nupes_smlatt(x02_, w02_, a2);                                                                             \
        a1 = nupes_smlabb(x13_, w13_, a1);                                                                             \
        a3 = nupes_smlatt(x13_, w13_, a3);                                                                             \
    } while (0)

/* Requantize, clamp and store the group's four outputs at po. Fast requantization: SMLAL and a
 * shift per channel, each result saturated to int8 (SSAT), the four packed and clamped to
 * [act_min, act_max] at once (SSUB8 + SEL twice), one 32-bit store: about 15 instructions per
 * output. */
static inline void nupes_dw_store4(int8_t *po, int32_t a0, int32_t a1, int32_t a2, int32_t a3, const nupes_dw_ctx_t *x)
{
    if (x->fast_rq) {
        const int32_t v0 = nupes_ssat8(nupes_dw_requant(a0, &x->rq[0]));
        const int32_t v1 = nupes_ssat8(nupes_dw_requant(a1, &x->rq[1]));
        const int32_t v2 = nupes_ssat8(nupes_dw_requant(a2, &x->rq[2]));
        const int32_t v3 = nupes_ssat8(nupes_dw_requant(a3, &x->rq[3]));
        int32_t v = (int32_t)((uint32_t)(uint8_t)v0 | ((uint32_t)(uint8_t)v1 << 8) | ((uint32_t)(uint8_t)v2 << 16) |
                              ((uint32_t)v3 << 24));
        v = nupes_min_s8x4(nupes_max_s8x4(v, x->lo4), x->hi4);
        memcpy(po, &v, 4);
    } else {
        po[0] = nupes_dw_output(a0, x->w, 0);
        po[1] = nupes_dw_output(a1, x->w, 1);
        po[2] = nupes_dw_output(a2, x->w, 2);
        po[3] = nupes_dw_output(a3, x->w, 3);
    }
}

/*
 * n output positions of the current run: px is channel c0 of the first position's first in-image
 * input, po its outputs. A full 3x3 window is unrolled, the levels at fixed offsets from x: per
 * position 9 LDR (inputs), 18 LDR levels (GCC pairs a few into LDRD), 18 SXTB16, 36 SMLAxy and
 * the bias and pointer loads, about 93 instructions for 36 MACs (2.6 per MAC), then about 60 to
 * requantize and store the 4 outputs. The trade: channels in groups of four (the C % 4 last ones
 * take the channel-outer path) and the group's levels and constants on the stack (the deepest
 * call chain of this kernel uses about 710 bytes of stack, measured with -fstack-usage).
 * Other shapes (borders, other kernels) loop over rows, a 2- or 3-wide row unrolled.
 */
static NUPES_NOINLINE void nupes_dw_run(const int8_t *px, int8_t *po, int32_t n, const nupes_dw_ctx_t *x)
{
    const int32_t in_c = x->in_c;
    if (x->rows == 3 && x->cols == 3 && x->k_h == 3 && x->k_w == 3) {
        const int32_t row_skip = x->row_stride - 2 * in_c;
        do {
            int32_t a0 = x->bias[0], a1 = x->bias[1], a2 = x->bias[2], a3 = x->bias[3];
            const int8_t *p = px;
            NUPES_DW_TAP(nupes_read32(p), x->wq);
            p += in_c;
            NUPES_DW_TAP(nupes_read32(p), x->wq + 2);
            p += in_c;
            NUPES_DW_TAP(nupes_read32(p), x->wq + 4);
            p += row_skip;
            NUPES_DW_TAP(nupes_read32(p), x->wq + 6);
            p += in_c;
            NUPES_DW_TAP(nupes_read32(p), x->wq + 8);
            p += in_c;
            NUPES_DW_TAP(nupes_read32(p), x->wq + 10);
            p += row_skip;
            NUPES_DW_TAP(nupes_read32(p), x->wq + 12);
            p += in_c;
            NUPES_DW_TAP(nupes_read32(p), x->wq + 14);
            p += in_c;
            NUPES_DW_TAP(nupes_read32(p), x->wq + 16);
            nupes_dw_store4(po, a0, a1, a2, a3, x);
            px += x->px_step;
            po += x->po_step;
        } while (--n);
    } else if (x->cols == 3 || x->cols == 2) { /* a border of a 3-wide kernel: rows unrolled */
        const int32_t rows = x->rows, cols = x->cols, w_step = 2 * x->k_w;
        const int32_t row_skip = x->row_stride - (cols - 1) * in_c;
        do {
            int32_t a0 = x->bias[0], a1 = x->bias[1], a2 = x->bias[2], a3 = x->bias[3];
            const int8_t *p = px;
            const int32_t *pw = x->wq + 2 * x->first;
            int32_t r;
            for (r = 0; r < rows; ++r, pw += w_step) {
                NUPES_DW_TAP(nupes_read32(p), pw);
                p += in_c;
                NUPES_DW_TAP(nupes_read32(p), pw + 2);
                if (cols == 3) {
                    p += in_c;
                    NUPES_DW_TAP(nupes_read32(p), pw + 4);
                }
                p += row_skip;
            }
            nupes_dw_store4(po, a0, a1, a2, a3, x);
            px += x->px_step;
            po += x->po_step;
        } while (--n);
    } else {
        const int32_t rows = x->rows, cols = x->cols;
        const int32_t row_skip = x->row_stride - cols * in_c, w_skip = 2 * (x->k_w - cols);
        do {
            int32_t a0 = x->bias[0], a1 = x->bias[1], a2 = x->bias[2], a3 = x->bias[3];
            const int8_t *p = px;
            const int32_t *pw = x->wq + 2 * x->first;
            int32_t r, k;
            for (r = 0; r < rows; ++r, p += row_skip, pw += w_skip) {
                for (k = 0; k < cols; ++k, p += in_c, pw += 2) {
                    NUPES_DW_TAP(nupes_read32(p), pw);
                }
            }
            nupes_dw_store4(po, a0, a1, a2, a3, x);
            px += x->px_step;
            po += x->po_step;
        } while (--n);
    }
}

/* The run of n positions from output (oy, ox), stepping (dy, dx) output positions. */
static void nupes_dw_do_run(const int8_t *in, int8_t *out, const nupes_conv_geom_t *g, nupes_dw_ctx_t *x, int32_t oy,
                            int32_t ox, int32_t n, int32_t dy, int32_t dx)
{
    const int32_t iy0 = oy * g->stride_h - g->pad_t, ix0 = ox * g->stride_w - g->pad_l;
    int32_t ky_lo, ky_hi, kx_lo, kx_hi;
    if (n <= 0) {
        return;
    }
    nupes_window_taps(iy0, g->k_h, g->in_h, &ky_lo, &ky_hi);
    nupes_window_taps(ix0, g->k_w, g->in_w, &kx_lo, &kx_hi);
    nupes_dw_shape(x, ky_lo, ky_hi, kx_lo, kx_hi);
    x->px_step = x->rows && x->cols ? (dy * g->stride_h * g->in_w + dx * g->stride_w) * g->in_c : 0;
    x->po_step = (dy * g->out_w + dx) * g->out_c;
    nupes_dw_run(x->rows && x->cols ? in + ((iy0 + ky_lo) * g->in_w + ix0 + kx_lo) * g->in_c : in,
                 out + (oy * g->out_w + ox) * g->out_c, n, x);
}

/* One group: runs covering every output position once. in, out: advanced to the group's c0. */
static void nupes_dw_group(const int8_t *in, int8_t *out, const nupes_conv_geom_t *g, nupes_dw_ctx_t *x)
{
    int32_t oy, ox, oy_lo = 0, oy_hi, ox_lo = 0, ox_hi;
    /* interior ranges: every tap of rows [oy_lo, oy_hi) / columns [ox_lo, ox_hi) inside the image */
    while (oy_lo < g->out_h && oy_lo * g->stride_h < g->pad_t) {
        ++oy_lo;
    }
    for (oy_hi = oy_lo; oy_hi < g->out_h && oy_hi * g->stride_h - g->pad_t + g->k_h <= g->in_h; ++oy_hi) {
    }
    while (ox_lo < g->out_w && ox_lo * g->stride_w < g->pad_l) {
        ++ox_lo;
    }
    for (ox_hi = ox_lo; ox_hi < g->out_w && ox_hi * g->stride_w - g->pad_l + g->k_w <= g->in_w; ++ox_hi) {
    }
    if (oy_lo < oy_hi && ox_lo < ox_hi) { /* the interior: one shape, the bias computed once */
        nupes_dw_do_run(in, out, g, x, oy_lo, ox_lo, ox_hi - ox_lo, 0, 1);
        for (oy = oy_lo + 1; oy < oy_hi; ++oy) {
            nupes_dw_run(in + ((oy * g->stride_h - g->pad_t) * g->in_w + ox_lo * g->stride_w - g->pad_l) * g->in_c,
                         out + (oy * g->out_w + ox_lo) * g->out_c, ox_hi - ox_lo, x);
        }
    }
    for (oy = 0; oy < g->out_h; ++oy) {
        if (oy >= oy_lo && oy < oy_hi) {
            continue;
        }
        nupes_dw_do_run(in, out, g, x, oy, ox_lo, ox_hi - ox_lo, 0, 1); /* top / bottom rows' middles */
        for (ox = 0; ox < g->out_w; ++ox) {
            if (ox < ox_lo || ox >= ox_hi) {
                nupes_dw_do_run(in, out, g, x, oy, ox, 1, 0, 0); /* corners */
            }
        }
    }
    for (ox = 0; ox < g->out_w; ++ox) { /* left and right columns' middles */
        if (ox < ox_lo || ox >= ox_hi) {
            nupes_dw_do_run(in, out, g, x, oy_lo, ox, oy_hi - oy_lo, 1, 0);
        }
    }
}

static void nupes_dw_fast(const int8_t *in, int8_t *out, const nupes_conv_geom_t *g, const nupes_layer_t *w,
                          int16_t *scratch)
{
    const int32_t c4 = g->out_c & ~3;
    nupes_layer_t wg = *w; /* the group's channels at index 0..3 */
    nupes_dw_ctx_t x;
    int32_t oc;
    x.w = &wg;
    for (oc = 0; oc < c4; oc += 4) {
        wg.bias = w->bias + oc;
        wg.mult = w->mult + oc;
        wg.shift = w->shift + oc;
        nupes_dw_setup(g, w, oc, scratch, &x);
        nupes_dw_group(in + oc, out + oc, g, &x);
    }
    if (c4 < g->out_c) {
        nupes_dw_channels(in, out, g, w, scratch, c4, g->out_c);
    }
}
#endif

#if defined(__ARM_FEATURE_MVE)
#include "nupes_mve.h"

/*
 * Helium (Cortex-M55), multiplier 1: four channels per int32x4 vector, every channel count (the
 * last group predicated), every weight width (levels decoded once per group, as int32 lanes:
 * level t of channel c0 + j in lane j of wq[t]). Per tap one widening VLDRB.S32 of the four
 * channels' inputs (HWC: contiguous), VMUL and VADD (Helium's VMLA takes a scalar operand only), the group's levels read from the stack. A
 * position whose window lies inside the image starts from bias - in_zp * (sum of all levels) and
 * multiplies raw inputs; a border position starts from the bias and adds w * (x - in_zp) over its
 * in-image taps only (zero padding). Any order of additions is fine: the true accumulator fits int32
 * (acc_bound), VMUL and VADD wrap like the DSP path's SMLAD. Then nupes_mve.h's requantization of the four
 * outputs (VQRDMULH and a rounding shift, exactly nupes_requantize, any shift) and one narrowing
 * VSTRB.
 */
/* A group's channels (lanes: 4 or 8) of the whole padded plane, (out_h - 1) * stride + k rows and
 * columns (in_zp outside the image), `lanes` bytes per pixel, when it fits this many bytes on the
 * stack: every window is then whole, with no border case and no per-position bounds. */
#define NUPES_DW_STAGE 2048

static void nupes_dw_stage(const int8_t *in, const nupes_conv_geom_t *g, int32_t c0, int32_t nc, int32_t zp,
                           int32_t ph, int32_t pw, int32_t lanes, int8_t *stage)
{
    const int32_t c = g->in_c;
    int32_t iy, ix, j;
    memset(stage, zp, (size_t)(ph * pw * lanes));
    for (iy = 0; iy < g->in_h && iy + g->pad_t < ph; ++iy) {
        const int8_t *src = in + iy * g->in_w * c + c0;
        int8_t *dst = stage + ((iy + g->pad_t) * pw + g->pad_l) * lanes;
        for (ix = 0; ix < g->in_w && ix + g->pad_l < pw; ++ix, src += c, dst += lanes) {
            if (nc == 8 && lanes == 8) { /* constant sizes: two word copies, no call */
                memcpy(dst, src, 8);
            } else if (nc == 4 && lanes == 4) {
                memcpy(dst, src, 4);
            } else {
                for (j = 0; j < nc; ++j) {
                    dst[j] = src[j];
                }
            }
        }
    }
}

/*
 * Eight channels per pass over the staged plane (when 8 bytes per pixel fit the stage): per tap one
 * widening VLDRB.S16 of the eight inputs, the eight levels as int16, VMULLB / VMULLT into the even
 * and the odd channels' int32 sums (eight MACs in six instructions), each sum started from its folded
 * bias; then both halves requantized, narrowed back into channel order (VMOVNB / VMOVNT) and stored
 * by one predicated VSTRB.16.
 */
static NUPES_NOINLINE void nupes_dw_mve8(const int8_t *in, int8_t *out, const nupes_conv_geom_t *g, const nupes_layer_t *w,
                          int16_t *scratch, int32_t ph, int32_t pw)
{
    const int32_t c = g->in_c, taps = g->k_h * g->k_w, zp = w->in_zp;
    const int32_t out_zp = w->out_zp, lo = w->act_min, hi = w->act_max, s8 = g->stride_w * 8;
    int8_t stage[NUPES_DW_STAGE];
    int16_t wq[8 * NUPES_DW_MAX_TAPS];
    int32_t soff[NUPES_DW_MAX_TAPS], fold[8], mult[8], shift[8];
    int32_t c0, j, t, oy, ox;
    for (t = 0; t < taps; ++t) {
        soff[t] = ((t / g->k_w) * pw + t % g->k_w) * 8;
    }
    for (c0 = 0; c0 < c; c0 += 8) {
        const int32_t nc = c - c0 < 8 ? c - c0 : 8, ne = (nc + 1) >> 1, no = nc >> 1;
        const mve_pred16_t pc = vctp16q((uint32_t)nc);
        nupes_mve_rq_t rq_e, rq_o;
        int32x4_t bias_e, bias_o;
        for (j = 0; j < 8; ++j) { /* even channels in 0..3, odd ones in 4..7 */
            const int32_t slot = (j >> 1) + 4 * (j & 1);
            if (j < nc) {
                nupes_decode_row(w->packed + (c0 + j) * w->row_bytes, w->bits, w->lut, taps, 1, scratch);
                fold[slot] = w->bias[c0 + j];
                mult[slot] = w->mult[c0 + j];
                shift[slot] = w->shift[c0 + j];
            } else {
                fold[slot] = mult[slot] = shift[slot] = 0;
            }
            for (t = 0; t < taps; ++t) {
                wq[8 * t + j] = j < nc ? scratch[t] : 0;
                fold[slot] -= zp * wq[8 * t + j];
            }
        }
        rq_e = nupes_mve_rq_load(mult, shift, ne);
        rq_o = nupes_mve_rq_load(mult + 4, shift + 4, no);
        bias_e = vldrwq_s32(fold);
        bias_o = vldrwq_s32(fold + 4);
        nupes_dw_stage(in, g, c0, nc, zp, ph, pw, 8, stage);
        for (oy = 0; oy < g->out_h; ++oy) {
            const int8_t *px = stage + oy * g->stride_h * pw * 8;
            int8_t *po = out + oy * g->out_w * c + c0;
            for (ox = 0; ox < g->out_w; ++ox, px += s8, po += c) {
                const int16_t *pq = wq;
                int32x4_t ae = bias_e, ao = bias_o;
                int16x8_t v = vdupq_n_s16(0);
                for (t = 0; t < taps; ++t, pq += 8) {
                    const int16x8_t x = vldrbq_s16(px + soff[t]), wv = vldrhq_s16(pq);
                    ae = vaddq_s32(ae, vmullbq_int_s16(x, wv));
                    ao = vaddq_s32(ao, vmulltq_int_s16(x, wv));
                }
                v = vmovnbq_s32(v, nupes_mve_output(ae, &rq_e, out_zp, lo, hi));
                v = vmovntq_s32(v, nupes_mve_output(ao, &rq_o, out_zp, lo, hi));
                vstrbq_p_s16(po, v, pc);
            }
        }
    }
}

static NUPES_NOINLINE void nupes_dw_mve(const int8_t *in, int8_t *out, const nupes_conv_geom_t *g, const nupes_layer_t *w,
                         int16_t *scratch)
{
    const int32_t c = g->in_c, taps = g->k_h * g->k_w, row_stride = g->in_w * c, zp = w->in_zp;
    const int32_t out_zp = w->out_zp, lo = w->act_min, hi = w->act_max;
    const int32_t step = g->stride_w * c;
    const int32_t ph = (g->out_h - 1) * g->stride_h + g->k_h, pw = (g->out_w - 1) * g->stride_w + g->k_w;
    const int32_t staged = ph * pw * 4 <= NUPES_DW_STAGE;
    int8_t stage[NUPES_DW_STAGE];
    int32_t wq[4 * NUPES_DW_MAX_TAPS], off[NUPES_DW_MAX_TAPS], soff[NUPES_DW_MAX_TAPS];
    int32_t c0, j, t, oy, ox, ky, kx;
    for (t = 0; t < taps; ++t) { /* tap t's input, from the window's first (in the input; in the stage) */
        off[t] = (t / g->k_w) * row_stride + (t % g->k_w) * c;
        soff[t] = ((t / g->k_w) * pw + t % g->k_w) * 4;
    }
    for (c0 = 0; c0 < c; c0 += 4) {
        const int32_t nc = c - c0 < 4 ? c - c0 : 4;
        const mve_pred16_t pc = vctp32q((uint32_t)nc);
        const nupes_mve_rq_t rq = nupes_mve_rq_load(w->mult + c0, w->shift + c0, nc);
        const int32x4_t bias = vldrwq_z_s32(w->bias + c0, pc);
        int32x4_t sum = vdupq_n_s32(0), bias_in;
        for (j = 0; j < 4; ++j) {
            if (j < nc) {
                nupes_decode_row(w->packed + (c0 + j) * w->row_bytes, w->bits, w->lut, taps, 1, scratch);
            }
            for (t = 0; t < taps; ++t) {
                wq[4 * t + j] = j < nc ? scratch[t] : 0;
            }
        }
        for (t = 0; t < taps; ++t) {
            sum = vaddq_s32(sum, vldrwq_s32(wq + 4 * t));
        }
        bias_in = vmlaq_n_s32(bias, sum, -zp); /* the whole window inside: bias - in_zp * sum of the levels */
        if (staged) { /* the padded plane on the stack: every window whole (in_zp taps add w * zp, folded out) */
            nupes_dw_stage(in, g, c0, nc, zp, ph, pw, 4, stage);
            for (oy = 0; oy < g->out_h; ++oy) {
                const int8_t *px = stage + oy * g->stride_h * pw * 4;
                int8_t *po = out + oy * g->out_w * c + c0;
                for (ox = 0; ox < g->out_w; ++ox, px += g->stride_w * 4, po += c) {
                    const int32_t *pq = wq;
                    int32x4_t acc = bias_in;
                    for (t = 0; t < taps; ++t, pq += 4) {
                        acc = vaddq_s32(acc, vmulq_s32(vldrbq_s32(px + soff[t]), vldrwq_s32(pq)));
                    }
                    vstrbq_p_s32(po, nupes_mve_output(acc, &rq, out_zp, lo, hi), pc);
                }
            }
            continue;
        }
        for (oy = 0; oy < g->out_h; ++oy) {
            const int32_t iy0 = oy * g->stride_h - g->pad_t;
            int32_t ky_lo, ky_hi;
            nupes_window_taps(iy0, g->k_h, g->in_h, &ky_lo, &ky_hi);
            for (ox = 0; ox < g->out_w; ++ox) {
                const int32_t ix0 = ox * g->stride_w - g->pad_l;
                int8_t *po = out + (oy * g->out_w + ox) * c + c0;
                int32_t kx_lo, kx_hi;
                int32x4_t acc;
                nupes_window_taps(ix0, g->k_w, g->in_w, &kx_lo, &kx_hi);
                if (nc == 4 && ky_lo == 0 && ky_hi == g->k_h && kx_lo == 0 && kx_hi == g->k_w) {
                    /* a run of whole windows along the row: per tap LDR (its offset), VLDRB, VLDRW, VMUL, VADD */
                    const int8_t *px = in + (iy0 * g->in_w + ix0) * c + c0;
                    int32_t n = 1;
                    while (ox + n < g->out_w && (ox + n) * g->stride_w - g->pad_l + g->k_w <= g->in_w) {
                        ++n;
                    }
                    ox += n - 1;
                    do {
                        const int32_t *pw = wq;
                        acc = bias_in;
                        for (t = 0; t < taps; ++t, pw += 4) {
                            acc = vaddq_s32(acc, vmulq_s32(vldrbq_s32(px + off[t]), vldrwq_s32(pw)));
                        }
                        vstrbq_s32(po, nupes_mve_output(acc, &rq, out_zp, lo, hi));
                        px += step;
                        po += c;
                    } while (--n);
                    continue;
                }
                if (ky_lo == 0 && ky_hi == g->k_h && kx_lo == 0 && kx_hi == g->k_w) {
                    acc = bias_in;
                    for (ky = 0; ky < g->k_h; ++ky) {
                        const int8_t *px = in + ((iy0 + ky) * g->in_w + ix0) * c + c0;
                        const int32_t *pw = wq + 4 * ky * g->k_w;
                        for (kx = 0; kx < g->k_w; ++kx, px += c, pw += 4) {
                            acc = vaddq_s32(acc, vmulq_s32(vldrbq_z_s32(px, pc), vldrwq_s32(pw)));
                        }
                    }
                } else { /* a border: bias + sum of w * (x - in_zp) over the in-image taps */
                    acc = bias;
                    for (ky = ky_lo; ky < ky_hi; ++ky) {
                        const int8_t *px = in + ((iy0 + ky) * g->in_w + ix0 + kx_lo) * c + c0;
                        const int32_t *pw = wq + 4 * (ky * g->k_w + kx_lo);
                        for (kx = kx_lo; kx < kx_hi; ++kx, px += c, pw += 4) {
                            acc = vaddq_s32(acc, vmulq_s32(vsubq_n_s32(vldrbq_z_s32(px, pc), zp), vldrwq_s32(pw)));
                        }
                    }
                }
                vstrbq_p_s32(po, nupes_mve_output(acc, &rq, out_zp, lo, hi), pc);
            }
        }
    }
}
#endif

void nupes_depthwise_conv2d(const int8_t *in, int8_t *out, const nupes_conv_geom_t *g, const nupes_layer_t *w, int16_t *scratch)
{
#if defined(__ARM_FEATURE_MVE)
    if (g->out_c == g->in_c && g->k_h * g->k_w <= NUPES_DW_MAX_TAPS) {
        const int32_t ph = (g->out_h - 1) * g->stride_h + g->k_h, pw = (g->out_w - 1) * g->stride_w + g->k_w;
        (void)nupes_dw_fast; /* the DSP path stays for the other cores */
        if (ph * pw * 8 <= NUPES_DW_STAGE) {
            nupes_dw_mve8(in, out, g, w, scratch, ph, pw);
        } else {
            nupes_dw_mve(in, out, g, w, scratch);
        }
        return;
    }
#endif
#if NUPES_USE_DSP
    if (g->out_c == g->in_c && g->out_c >= 4 && g->k_h * g->k_w <= NUPES_DW_MAX_TAPS) {
        nupes_dw_fast(in, out, g, w, scratch);
        return;
    }
#endif
    nupes_dw_channels(in, out, g, w, scratch, 0, g->out_c);
}
