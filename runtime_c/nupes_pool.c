#include <string.h>

#include "nupes_dsp.h"
#include "nupes_fixedpoint.h"
#include "nupes_kernels.h"
#include "nupes_window.h"

#if NUPES_USE_DSP
/*
 * Channels [0, c4) of output pixel o (c4 > 0, a multiple of 4), four (one word) at a time, with the
 * output as the accumulator: max over rows x cols taps, the first at win, the next of a row c bytes
 * on, the next row row_stride bytes on. The first tap is copied (LDR, STR, compare, branch per
 * word); every other is maxed in: LDR both, SSUB8 + SEL (the per-byte max), STR, compare, branch:
 * 7 instructions per 4 channels and tap, where the scalar path spends ~6 per channel and tap.
 */
static void nupes_max_words(const int8_t *win, int8_t *o, int32_t c4, int32_t rows, int32_t cols, int32_t c,
                            int32_t row_stride)
{
    int8_t *const o_end = o + c4;
    const int8_t *px = win;
    int8_t *po = o;
    int32_t r, t = 1; /* tap 0 of row 0 is the copy */
    do {
        memcpy(po, px, 4);
        px += 4;
        po += 4;
    } while (po != o_end);
    for (r = 0; r < rows; ++r, win += row_stride, t = 0) {
        for (; t < cols; ++t) {
            px = win + t * c;
            po = o;
            do {
                const int32_t m = nupes_max_s8x4(nupes_read32(po), nupes_read32(px));
                memcpy(po, &m, 4);
                px += 4;
                po += 4;
            } while (po != o_end);
        }
    }
}
#endif

/* Max over each window of its taps inside the image: padding never wins (the reference pads with
 * -128), so out-of-image taps are skipped. */
void nupes_max_pool2d(const int8_t *in, int8_t *out, const nupes_conv_geom_t *g, int32_t act_min, int32_t act_max)
{
    const int32_t c = g->in_c, row_stride = g->in_w * g->in_c;
    int32_t oy, ox, ch, ky, kx;
#if NUPES_USE_DSP
    /* four copies of each bound, for a per-byte clamp; skipped when it is the full int8 range */
    const int32_t clamp = act_min > -128 || act_max < 127;
    const int32_t lo4 = (int32_t)((uint32_t)(uint8_t)act_min * 0x01010101u);
    const int32_t hi4 = (int32_t)((uint32_t)(uint8_t)act_max * 0x01010101u);
    const int32_t c4 = c & ~3;
#endif
    for (oy = 0; oy < g->out_h; ++oy) {
        const int32_t iy0 = oy * g->stride_h - g->pad_t;
        int32_t ky_lo, ky_hi;
        nupes_window_taps(iy0, g->k_h, g->in_h, &ky_lo, &ky_hi);
        for (ox = 0; ox < g->out_w; ++ox) {
            const int32_t ix0 = ox * g->stride_w - g->pad_l;
            int32_t kx_lo, kx_hi;
            const int8_t *win;
            int8_t *o = out + (oy * g->out_w + ox) * c;
            nupes_window_taps(ix0, g->k_w, g->in_w, &kx_lo, &kx_hi);
            ch = 0;
            if (ky_lo >= ky_hi || kx_lo >= kx_hi) { /* no tap in the image: only if padding >= kernel */
                for (; ch < c; ++ch) {
                    o[ch] = nupes_clamp_s8(-128, act_min, act_max);
                }
                continue;
            }
            win = in + (iy0 + ky_lo) * row_stride + (ix0 + kx_lo) * c; /* channel 0 of the first in-image tap */
#if NUPES_USE_DSP
            if (c4 > 0) {
                nupes_max_words(win, o, c4, ky_hi - ky_lo, kx_hi - kx_lo, c, row_stride);
                if (clamp) { /* per word: LDR, 2 x (SSUB8 + SEL), STR, compare, branch */
                    int8_t *po = o;
                    do {
                        const int32_t m = nupes_min_s8x4(nupes_max_s8x4(nupes_read32(po), lo4), hi4);
                        memcpy(po, &m, 4);
                        po += 4;
                    } while (po != o + c4);
                }
                ch = c4;
            }
#endif
            /* One channel at a time (the portable path, and the last in_c % 4 channels on the DSP
             * path): LDRSB, compare, select, pointer step and branch per tap. */
            for (; ch < c; ++ch) {
                int32_t m = -128;
                const int8_t *row = win + ch;
                for (ky = ky_lo; ky < ky_hi; ++ky, row += row_stride) {
                    const int8_t *px = row;
                    for (kx = kx_lo; kx < kx_hi; ++kx, px += c) {
                        m = *px > m ? *px : m;
                    }
                }
                o[ch] = nupes_clamp_s8(m, act_min, act_max);
            }
        }
    }
}

static int32_t nupes_rounded_mean(int32_t sum, int32_t count)
{
    return sum > 0 ? (sum + count / 2) / count : (sum - count / 2) / count;
}

/* Windows lie inside the input (no padding, checked by the code generator). Per output value:
 * k_h * k_w LDRSB/ADD through precomputed tap offsets, one SDIV for TFLite's rounded mean. */
void nupes_avg_pool2d(const int8_t *in, int8_t *out, const nupes_conv_geom_t *g, int32_t act_min, int32_t act_max)
{
    const int32_t c_n = g->in_c, count = g->k_h * g->k_w;
    const int32_t row_stride = g->in_w * c_n;
    int32_t oy, ox, c, ky, kx;
    for (oy = 0; oy < g->out_h; ++oy) {
        for (ox = 0; ox < g->out_w; ++ox) {
            const int8_t *base = in + oy * g->stride_h * row_stride + ox * g->stride_w * c_n;
            if (g->k_h == 2 && g->k_w == 2) { /* the common 2x2 window: four loads, no loops */
                for (c = 0; c < c_n; ++c, ++base) {
                    const int32_t sum = base[0] + base[c_n] + base[row_stride] + base[row_stride + c_n];
                    *out++ = nupes_clamp_s8(nupes_rounded_mean(sum, 4), act_min, act_max);
                }
                continue;
            }
            for (c = 0; c < c_n; ++c, ++base) {
                const int8_t *py = base;
                int32_t sum = 0;
                for (ky = 0; ky < g->k_h; ++ky, py += row_stride) {
                    const int8_t *px = py;
                    for (kx = 0; kx < g->k_w; ++kx, px += c_n) {
                        sum += *px;
                    }
                }
                *out++ = nupes_clamp_s8(nupes_rounded_mean(sum, count), act_min, act_max);
            }
        }
    }
}

void nupes_global_avg_pool(const int8_t *in, int8_t *out, int32_t hw, int32_t c, int32_t act_min, int32_t act_max)
{
    int32_t ch, i;
    for (ch = 0; ch < c; ++ch) {
        int32_t sum = 0;
        for (i = 0; i < hw; ++i) {
            sum += in[i * c + ch];
        }
        out[ch] = nupes_clamp_s8(nupes_rounded_mean(sum, hw), act_min, act_max);
    }
}

void nupes_clamp(const int8_t *in, int8_t *out, int32_t n, int32_t lo, int32_t hi)
{
    int32_t i;
    for (i = 0; i < n; ++i) {
        out[i] = nupes_clamp_s8(in[i], lo, hi);
    }
}

int32_t nupes_argmax_s8(const int8_t *x, int32_t n)
{
    int32_t i, best = 0;
    for (i = 1; i < n; ++i) {
        if (x[i] > x[best]) {
            best = i;
        }
    }
    return best;
}

/* TFLite Micro's int8 MAXIMUM / MINIMUM (maximum_minimum.cc): the codes compared, one quantization for all. */
void nupes_maximum_s8(const int8_t *a, const int8_t *b, int8_t *out, int32_t n)
{
    int32_t i;
    for (i = 0; i < n; ++i) {
        out[i] = a[i] > b[i] ? a[i] : b[i];
    }
}

void nupes_minimum_s8(const int8_t *a, const int8_t *b, int8_t *out, int32_t n)
{
    int32_t i;
    for (i = 0; i < n; ++i) {
        out[i] = a[i] < b[i] ? a[i] : b[i];
    }
}
