#include "nupes_dot.h"
#include "nupes_fixedpoint.h"
#include "nupes_kernels.h"

int32_t nupes_fully_connected_get_buffer_size(int32_t k)
{
    return k * (int32_t)sizeof(int16_t);
}

void nupes_fully_connected(const int8_t *in, int8_t *out, int32_t k, int32_t out_n, const nupes_layer_t *w, int16_t *scratch)
{
    int32_t o;
    for (o = 0; o < out_n; ++o) {
        int32_t acc;
        nupes_decode_row(w->packed + o * w->row_bytes, w->bits, w->lut, k, k, scratch);
        acc = nupes_dot_run(in, scratch, k, 0, k, w->in_zp, w->bias[o]);
        acc = nupes_requantize(acc, w->mult[o], w->shift[o]) + w->out_zp;
        out[o] = nupes_clamp_s8(acc, w->act_min, w->act_max);
    }
}
