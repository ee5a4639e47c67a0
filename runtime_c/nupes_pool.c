#include "nupes_fixedpoint.h"
#include "nupes_kernels.h"

void nupes_max_pool2d(const int8_t *in, int8_t *out, const nupes_conv_geom_t *g, int32_t act_min, int32_t act_max)
{
    int32_t oy, ox, c, ky, kx;
    for (oy = 0; oy < g->out_h; ++oy) {
        for (ox = 0; ox < g->out_w; ++ox) {
            for (c = 0; c < g->in_c; ++c) {
                int32_t m = -128;
                for (ky = 0; ky < g->k_h; ++ky) {
                    const int32_t iy = oy * g->stride_h - g->pad_t + ky;
                    if (iy < 0 || iy >= g->in_h) {
                        continue;
                    }
                    for (kx = 0; kx < g->k_w; ++kx) {
                        const int32_t ix = ox * g->stride_w - g->pad_l + kx;
                        if (ix >= 0 && ix < g->in_w && in[(iy * g->in_w + ix) * g->in_c + c] > m) {
                            m = in[(iy * g->in_w + ix) * g->in_c + c];
                        }
                    }
                }
                out[(oy * g->out_w + ox) * g->in_c + c] = nupes_clamp_s8(m, act_min, act_max);
            }
        }
    }
}

static int32_t nupes_rounded_mean(int32_t sum, int32_t count)
{
    return sum > 0 ? (sum + count / 2) / count : (sum - count / 2) / count;
}

void nupes_avg_pool2d(const int8_t *in, int8_t *out, const nupes_conv_geom_t *g, int32_t act_min, int32_t act_max)
{
    int32_t oy, ox, c, ky, kx;
    for (oy = 0; oy < g->out_h; ++oy) {
        for (ox = 0; ox < g->out_w; ++ox) {
            for (c = 0; c < g->in_c; ++c) {
                int32_t sum = 0;
                for (ky = 0; ky < g->k_h; ++ky) {
                    for (kx = 0; kx < g->k_w; ++kx) {
                        const int32_t iy = oy * g->stride_h + ky;
                        const int32_t ix = ox * g->stride_w + kx;
                        sum += in[(iy * g->in_w + ix) * g->in_c + c];
                    }
                }
                out[(oy * g->out_w + ox) * g->in_c + c] = nupes_clamp_s8(nupes_rounded_mean(sum, g->k_h * g->k_w), act_min, act_max);
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
