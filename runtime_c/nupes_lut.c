/*
 * nupes_lut.c - the byte-moving kernels: elementwise int8 activations (sigmoid, tanh, hard-swish,
 * leaky ReLU) as a table of their 256 outputs, computed at build time with TFLite Micro's integer
 * arithmetic (nupes_edge/intref/lut_ops.py; one load per element, exact by construction), and
 * channel concatenation.
 */
#include <string.h>

#include "nupes_kernels.h"

void nupes_lut_s8(const int8_t *in, int8_t *out, int32_t n, const int8_t *table)
{
    for (int32_t i = 0; i < n; ++i) {
        out[i] = table[(int32_t)in[i] + 128];
    }
}

/* Channel concatenation of HWC tensors: for each pixel, the channels of each input in turn. The
 * inputs and the output share one quantization, so this is a copy: one memcpy per pixel and input
 * (the planner never overlaps a step's output with its inputs, codegen/plan.py lifetimes). */
void nupes_concat_hwc_s8(const int8_t *const *ins, const int32_t *channels, int32_t n_in, int8_t *out,
                         int32_t pixels)
{
    for (int32_t p = 0; p < pixels; ++p) {
        for (int32_t k = 0; k < n_in; ++k) {
            memcpy(out, ins[k] + p * channels[k], (size_t)channels[k]);
            out += channels[k];
        }
    }
}
