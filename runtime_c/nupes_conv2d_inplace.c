#include <string.h>

#include "nupes_kernels.h"

/* A convolution written over its own input (the planner's least-RAM plan): `band` output rows at a
 * time are computed by the layer's own kernel on the input rows they read (a band geometry: rows
 * outside the band are padding to the kernel, as the real image's edges are) into `pend`, a ring of
 * `slots` rows (a multiple of `band`, so a band never wraps), and each row is copied home once no
 * later output row reads the input bytes it lands on. The planner sizes the ring by running this
 * same loop (codegen/plan.py inplace_slots). Bit-exact with the kernel run out of place: every
 * output value is the same kernel's on the same inputs. */
void nupes_conv2d_inplace(nupes_conv_fn kernel, int8_t *buf, const nupes_conv_geom_t *g, const nupes_layer_t *w,
                          int16_t *scratch, int8_t *pend, int32_t band, int32_t slots)
{
    const int32_t row_in = g->in_w * g->in_c;
    const int32_t row_out = g->out_w * g->out_c;
    int32_t r, flushed = 0;
    for (r = 0; r < g->out_h; r += band) {
        nupes_conv_geom_t b = *g;
        const int32_t rows = g->out_h - r < band ? g->out_h - r : band;
        const int32_t last = r + rows - 1;
        const int32_t top = r * g->stride_h - g->pad_t; /* the first input row the band reads */
        const int32_t bottom = last * g->stride_h - g->pad_t + g->k_h; /* one past the last */
        const int32_t y0 = top > 0 ? top : 0;
        const int32_t y1 = bottom < g->in_h ? bottom : g->in_h;
        int32_t needed;
        b.in_h = y1 - y0;
        b.pad_t = y0 - top;
        b.out_h = rows;
        kernel(buf + y0 * row_in, pend + (r % slots) * row_out, &b, w, scratch);
        needed = (last + 1) * g->stride_h - g->pad_t; /* the first input row any later output row reads */
        needed = needed > 0 ? needed : 0;
        while (flushed <= last && (last + 1 == g->out_h || (flushed + 1) * row_out <= needed * row_in)) {
            memcpy(buf + flushed * row_out, pend + (flushed % slots) * row_out, (size_t)row_out);
            ++flushed;
        }
    }
}
