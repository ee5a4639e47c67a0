/*
 * nupes_dot.h - sum_i w[i] * (x[i] - zp), int8 inputs, int16 levels, int32 accumulator.
 * DSP path: four inputs per step with __SXTB16 + __SSUB16 + two __SMLAD; the levels must be
 * in the (v0, v2, v1, v3) group order that nupes_decode_row writes for runs of length n.
 */
#ifndef NUPES_DOT_H
#define NUPES_DOT_H

#include <stdint.h>

#include "nupes_dsp.h"

static inline int32_t nupes_dot_s8_s16(const int8_t *x, const int16_t *w, int32_t n, int32_t zp, int32_t acc)
{
    int32_t i = 0;
#if NUPES_USE_DSP
    const int32_t zp2 = (int32_t)(((uint32_t)(uint16_t)zp) | ((uint32_t)(uint16_t)zp << 16));
    for (; i + 4 <= n; i += 4) {
        const int32_t x4 = nupes_read32(x + i);
        const int32_t x02 = nupes_ssub16(nupes_sxtb16(x4), zp2);
        const int32_t x13 = nupes_ssub16(nupes_sxtb16_ror8(x4), zp2);
        acc = nupes_smlad(x02, nupes_read32(w + i), acc);
        acc = nupes_smlad(x13, nupes_read32(w + i + 2), acc);
    }
#endif
    for (; i < n; ++i) {
        acc += (int32_t)w[i] * ((int32_t)x[i] - zp);
    }
    return acc;
}

#endif /* NUPES_DOT_H */
