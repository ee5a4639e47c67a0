#include <string.h>

#include "nupes_kernels.h"

/* A convolution written over its own input (the planner's least-RAM plan): output row r is computed
 * by the layer's own kernel on the input rows it reads (a band geometry: the rows outside the band
 * are padding to the kernel, as the real image's edges are) into `pend`, a ring of `slots` rows,
 * and copied home once no later output row reads the input bytes it lands on. The planner sizes
 * `slots` by running this same loop (codegen/plan.py inplace_slots). Bit-exact with the kernel run
 * out of place: every output value is the same kernel's on the same inputs. */
void nupes_conv2d_inplace(nupes_conv_fn kernel, int8_t *buf, const nupes_conv_geom_t *g, const nupes_layer_t *w,
                          int16_t *scratch, int8_t *pend, int32_t slots)
{
    const int32_t row_in = g->in_w * g->in_c;
    const int32_t row_out = g->out_w * g->out_c;
    int32_t r, flushed = 0;
    for (r = 0; r < g->out_h; ++r) {
        nupes_conv_geom_t band = *g;
        const int32_t top = r * g->stride_h - g->pad_t; /* the first input row output row r reads */
        const int32_t y0 = top > 0 ? top : 0;
        const int32_t y1 = top + g->k_h < g->in_h ? top + g->k_h : g->in_h;
        int32_t needed;
        band.in_h = y1 - y0;
        band.pad_t = y0 - top;
        band.out_h = 1;
        kernel(buf + y0 * row_in, pend + (r % slots) * row_out, &band, w, scratch);
        needed = (r + 1) * g->stride_h - g->pad_t; /* the first input row any later output row reads */
        needed = needed > 0 ? needed : 0;
        while (flushed <= r && (r + 1 == g->out_h || (flushed + 1) * row_out <= needed * row_in)) {
            memcpy(buf + flushed * row_out, pend + (flushed % slots) * row_out, (size_t)row_out);
            ++flushed;
        }
    }
}
