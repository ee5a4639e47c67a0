#include "nupes_kernels.h"

/* A chain of layers run band by band (the least-RAM plan's tiled steps): the chain's last layer
 * computes `band` output rows at a time, and each layer before it only the rows the next one reads,
 * into two small tiles used in turn. The chain's intermediate tensors are never whole in memory;
 * where windows overlap (kernel > stride), the rows a band shares with the next are computed again.
 * Every call is a layer's own kernel on a band geometry (rows outside the band are padding to the
 * kernel, as the image's edges are; the band's top padding is what is left of the layer's), so each
 * output value is the one the layer computes run whole. codegen/plan.py sizes the tiles and counts
 * the recomputed rows by running this same loop (tiled_rows). */
void nupes_tiled_chain(const nupes_stage_t *s, int32_t n, const int8_t *in, int8_t *out, int8_t *tile_a,
                       int8_t *tile_b, int32_t band, int16_t *scratch, nupes_profile_fn hook, int32_t first_layer)
{
    const nupes_conv_geom_t *last = &s[n - 1].g;
    int32_t lo[NUPES_CHAIN_MAX], hi[NUPES_CHAIN_MAX]; /* the output rows layer k computes for this band */
    int32_t r, k;
    for (r = 0; r < last->out_h; r += band) {
        const int8_t *src = in;
        int32_t src_row0 = 0; /* the row of its layer's input that src[0] is */
        lo[n - 1] = r;
        hi[n - 1] = r + band < last->out_h ? r + band : last->out_h;
        for (k = n - 1; k > 0; --k) { /* the rows of layer k's input: layer k-1's output rows */
            const nupes_conv_geom_t *g = &s[k].g;
            const int32_t top = lo[k] * g->stride_h - g->pad_t;
            const int32_t bottom = (hi[k] - 1) * g->stride_h - g->pad_t + g->k_h;
            lo[k - 1] = top > 0 ? top : 0;
            hi[k - 1] = bottom < g->in_h ? bottom : g->in_h;
        }
        for (k = 0; k < n; ++k) {
            const nupes_conv_geom_t *g = &s[k].g;
            nupes_conv_geom_t b = *g;
            const int32_t top = lo[k] * g->stride_h - g->pad_t;
            const int32_t bottom = (hi[k] - 1) * g->stride_h - g->pad_t + g->k_h;
            const int32_t y0 = top > 0 ? top : 0;
            const int32_t y1 = bottom < g->in_h ? bottom : g->in_h;
            int8_t *dst = k == n - 1 ? out + lo[k] * g->out_w * g->out_c : (k % 2 == 0 ? tile_a : tile_b);
            const int8_t *from = src + (y0 - src_row0) * g->in_w * g->in_c;
            b.in_h = y1 - y0;
            b.pad_t = y0 - top;
            b.out_h = hi[k] - lo[k];
            if (hook) {
                hook(first_layer + k, 1);
            }
            if (s[k].conv) {
                s[k].conv(from, dst, &b, s[k].w, scratch);
            } else if (s[k].pool == NUPES_POOL_MAX) {
                nupes_max_pool2d(from, dst, &b, s[k].act_min, s[k].act_max);
            } else {
                nupes_avg_pool2d(from, dst, &b, s[k].act_min, s[k].act_max);
            }
            if (hook) {
                hook(first_layer + k, 0);
            }
            src = dst;
            src_row0 = lo[k];
        }
    }
}
