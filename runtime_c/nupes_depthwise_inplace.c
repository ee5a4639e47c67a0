#include <string.h>

#include "nupes_kernels.h"

/* A depthwise convolution written over its own input (the least-RAM plan), four channels at a time,
 * as TinyEngine does: a group's input planes are copied out into `grp`, the layer's own kernel
 * computes the group's output planes from there into the rest of `grp` (a geometry of 4 channels, the
 * layer's weights and requantization from channel oc on), and they are copied back into the same
 * channels. Output channel c lands only on the bytes of input channel c, which its group has already
 * copied, so no other group's input changes: bit-exact with the kernel run out of place, with one
 * kernel call per group (no per-row set-up) and a buffer of 4 * (in + out) pixels. */
void nupes_depthwise_inplace(int8_t *buf, const nupes_conv_geom_t *g, const nupes_layer_t *w, int16_t *scratch,
                             int8_t *grp)
{
    const int32_t n_in = g->in_h * g->in_w, n_out = g->out_h * g->out_w, c = g->in_c;
    int8_t *const g_in = grp, *const g_out = grp + 4 * n_in;
    nupes_conv_geom_t b = *g;
    nupes_layer_t wg = *w;
    int32_t oc, p;
    b.in_c = b.out_c = 4;
    for (oc = 0; oc + 4 <= c; oc += 4) {
        for (p = 0; p < n_in; ++p) {
            memcpy(g_in + 4 * p, buf + p * c + oc, 4);
        }
        wg.packed = w->packed + oc * w->row_bytes;
        wg.bias = w->bias + oc;
        wg.mult = w->mult + oc;
        wg.shift = w->shift + oc;
        nupes_depthwise_conv2d(g_in, g_out, &b, &wg, scratch);
        for (p = 0; p < n_out; ++p) {
            memcpy(buf + p * c + oc, g_out + 4 * p, 4);
        }
    }
}
