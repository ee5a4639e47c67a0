#include <string.h>

#include "nupes_kernels.h"

/* A chain of layers run band by band (the least-RAM plan's tiled steps): the chain's last layer
 * computes `band` output rows at a time, and each layer before it the rows the next one reads, into a
 * tile of its own. A tile keeps the rows the next band reads again (the window's overlap, moved to its
 * top), so every row is computed once: the chain's intermediate tensors are never whole, and no work
 * is repeated. Every call is a layer's own kernel on a band geometry (rows outside the band are
 * padding to the kernel, as the image's edges are; the band's top padding is what is left of the
 * layer's), so each output value is the one the layer computes run whole. codegen/plan.py sizes the
 * tiles by running this same loop (tiled_rows). */

/* The output rows each layer needs for the band of the last layer's rows [r, r + band). */
static void nupes_chain_rows(const nupes_stage_t *s, int32_t n, int32_t r, int32_t band, int32_t *lo, int32_t *hi)
{
    const int32_t out_h = s[n - 1].g.out_h;
    int32_t k;
    lo[n - 1] = r;
    hi[n - 1] = r + band < out_h ? r + band : out_h;
    for (k = n - 1; k > 0; --k) { /* the rows of layer k's input: layer k-1's output rows */
        const nupes_conv_geom_t *g = &s[k].g;
        const int32_t top = lo[k] * g->stride_h - g->pad_t;
        const int32_t bottom = (hi[k] - 1) * g->stride_h - g->pad_t + g->k_h;
        lo[k - 1] = top > 0 ? top : 0;
        hi[k - 1] = bottom < g->in_h ? bottom : g->in_h;
    }
}

/* Layer k's output rows [from, to) into dst, from its input `src` whose first row is row src_row0. */
static void nupes_chain_call(const nupes_stage_t *st, const int8_t *src, int32_t src_row0, int8_t *dst,
                             int32_t from, int32_t to, int16_t *scratch, nupes_profile_fn hook, int32_t layer)
{
    const nupes_conv_geom_t *g = &st->g;
    nupes_conv_geom_t b = *g;
    const int32_t top = from * g->stride_h - g->pad_t;
    const int32_t bottom = (to - 1) * g->stride_h - g->pad_t + g->k_h;
    const int32_t y0 = top > 0 ? top : 0;
    const int32_t y1 = bottom < g->in_h ? bottom : g->in_h;
    const int8_t *in = src + (y0 - src_row0) * g->in_w * g->in_c;
    b.in_h = y1 - y0;
    b.pad_t = y0 - top;
    b.out_h = to - from;
    if (hook) {
        hook(layer, 1);
    }
    if (st->conv) {
        st->conv(in, dst, &b, st->w, scratch);
    } else if (st->pool == NUPES_POOL_MAX) {
        nupes_max_pool2d(in, dst, &b, st->act_min, st->act_max);
    } else {
        nupes_avg_pool2d(in, dst, &b, st->act_min, st->act_max);
    }
    if (hook) {
        hook(layer, 0);
    }
}

/* One band: layers 0..n-2 bring their tiles to rows [lo[k], hi[k]) (a tile holds rows [top[k], end[k])
 * from the band before: those it shares are kept), the last layer computes [lo, hi) into last_out. */
static void nupes_chain_band(const nupes_stage_t *s, int32_t n, const int8_t *in, int8_t *last_out,
                             int8_t *const *tiles, int32_t *top, int32_t *end, const int32_t *lo, const int32_t *hi,
                             int16_t *scratch, nupes_profile_fn hook, int32_t first_layer)
{
    const int8_t *src = in;
    int32_t src_row0 = 0, k;
    for (k = 0; k < n - 1; ++k) {
        const int32_t row = s[k].g.out_w * s[k].g.out_c;
        int32_t from = lo[k];
        if (lo[k] < end[k]) { /* rows the band before computed: moved to the tile's top */
            memmove(tiles[k], tiles[k] + (lo[k] - top[k]) * row, (size_t)((end[k] - lo[k]) * row));
            from = end[k];
        }
        if (from < hi[k]) {
            nupes_chain_call(&s[k], src, src_row0, tiles[k] + (from - lo[k]) * row, from, hi[k], scratch, hook,
                             first_layer + k);
        }
        top[k] = lo[k];
        end[k] = hi[k];
        src = tiles[k];
        src_row0 = lo[k];
    }
    nupes_chain_call(&s[n - 1], src, src_row0, last_out, lo[n - 1], hi[n - 1], scratch, hook, first_layer + n - 1);
}

void nupes_tiled_chain(const nupes_stage_t *s, int32_t n, const int8_t *in, int8_t *out, int8_t *const *tiles,
                       int32_t band, int16_t *scratch, nupes_profile_fn hook, int32_t first_layer)
{
    const nupes_conv_geom_t *last = &s[n - 1].g;
    int32_t lo[NUPES_CHAIN_MAX], hi[NUPES_CHAIN_MAX], top[NUPES_CHAIN_MAX] = {0}, end[NUPES_CHAIN_MAX] = {0};
    int32_t r;
    for (r = 0; r < last->out_h; r += band) {
        nupes_chain_rows(s, n, r, band, lo, hi);
        nupes_chain_band(s, n, in, out + r * last->out_w * last->out_c, tiles, top, end, lo, hi, scratch, hook,
                         first_layer);
    }
}

/* A residual block over `buf`: the chain's result added to its own input (the add's operands in the
 * model's order), written back over that input. The last layer's band goes to tiles[n - 1]; each
 * band's sums wait in `pend` (a ring of `slots` rows, a multiple of `band`) until no later band reads
 * the input rows they land on: the first input row the next band's first call reads, and the add's own
 * rows, which come later. */
void nupes_tiled_residual(const nupes_stage_t *s, int32_t n, int8_t *buf, int8_t *const *tiles, int32_t band,
                          int16_t *scratch, nupes_profile_fn hook, int32_t first_layer, nupes_add_fn add,
                          const nupes_add_params_t *ap, int32_t input_first, int8_t *pend, int32_t slots)
{
    const nupes_conv_geom_t *last = &s[n - 1].g;
    const int32_t row = last->out_w * last->out_c; /* = the input's row: the add's shapes are equal */
    int8_t *const sum = tiles[n - 1];
    int32_t lo[NUPES_CHAIN_MAX], hi[NUPES_CHAIN_MAX], top[NUPES_CHAIN_MAX] = {0}, end[NUPES_CHAIN_MAX] = {0};
    int32_t r, flushed = 0;
    for (r = 0; r < last->out_h; r += band) {
        int32_t rows, keep = last->out_h;
        int8_t *p = pend + (r % slots) * row;
        nupes_chain_rows(s, n, r, band, lo, hi);
        rows = hi[n - 1] - lo[n - 1];
        nupes_chain_band(s, n, buf, sum, tiles, top, end, lo, hi, scratch, hook, first_layer);
        if (hook) {
            hook(first_layer + n, 1);
        }
        add(input_first ? buf + r * row : sum, input_first ? sum : buf + r * row, p, rows * row, ap);
        if (hook) {
            hook(first_layer + n, 0);
        }
        if (r + band < last->out_h) { /* the next band's first call starts at the first row no tile holds */
            int32_t from, top;
            nupes_chain_rows(s, n, r + band, band, lo, hi);
            from = n > 1 && end[0] > lo[0] ? end[0] : lo[0];
            top = from * s[0].g.stride_h - s[0].g.pad_t;
            keep = top > 0 ? top : 0;
        }
        while (flushed < r + rows && flushed < keep) {
            memcpy(buf + flushed * row, pend + (flushed % slots) * row, (size_t)row);
            ++flushed;
        }
    }
}
