/*
 * nupes_dot.h - sum_j w[j] * (x[j] - zp) over a sub-range of one weight run, int8 inputs,
 * int16 levels, int32 accumulator.
 *
 * A "run" is a stretch of decoded levels that the kernels read contiguously (one kernel row
 * k_w * c_in for conv, the whole row for dense). On the DSP path nupes_decode_row stores each
 * full group of four levels of a run, counted from the run's start, as (v0, v2, v1, v3): the
 * order in which __SXTB16 unpacks four int8 inputs. nupes_dot_run reads any sub-range
 * [start, start + n) of a run of length run_len: scalar up to the next group boundary, four MACs
 * per step (__SXTB16, __SSUB16, two __SMLAD) over whole groups, scalar for the rest.
 */
#ifndef NUPES_DOT_H
#define NUPES_DOT_H

#include <stdint.h>

#include "nupes_dsp.h"

/* Where level j of a run of run_len levels is stored (identity on the portable path). */
static inline int32_t nupes_run_slot(int32_t j, int32_t run_len)
{
#if NUPES_USE_DSP
    if (j < (run_len & ~3)) {
        const int32_t lane = j & 3;
        return (j & ~3) | ((lane & 1) << 1) | ((lane >> 1) & 1);
    }
#else
    (void)run_len;
#endif
    return j;
}

/* x points at the input for level `start`; w at level 0 of the run. */
static inline int32_t nupes_dot_run(const int8_t *x, const int16_t *w, int32_t run_len, int32_t start, int32_t n,
                                    int32_t zp, int32_t acc)
{
    int32_t j = start;
    const int32_t end = start + n;
#if NUPES_USE_DSP
    const int32_t groups_end = run_len & ~3;
    const int32_t zp2 = (int32_t)(((uint32_t)(uint16_t)zp) | ((uint32_t)(uint16_t)zp << 16));
    for (; j < end && (j & 3); ++j) {
        acc += (int32_t)w[nupes_run_slot(j, run_len)] * ((int32_t)x[j - start] - zp);
    }
    for (; j + 4 <= end && j + 4 <= groups_end; j += 4) {
        const int32_t x4 = nupes_read32(x + (j - start));
        const int32_t x02 = nupes_ssub16(nupes_sxtb16(x4), zp2);
        const int32_t x13 = nupes_ssub16(nupes_sxtb16_ror8(x4), zp2);
        acc = nupes_smlad(x02, nupes_read32(w + j), acc);
        acc = nupes_smlad(x13, nupes_read32(w + j + 2), acc);
    }
#endif
    for (; j < end; ++j) {
        acc += (int32_t)w[nupes_run_slot(j, run_len)] * ((int32_t)x[j - start] - zp);
    }
    return acc;
}

/* The same for two output channels at once (levels w0, w1 of the same run layout): every input
 * is loaded and unpacked once for both. */
static inline void nupes_dot2_run(const int8_t *x, const int16_t *w0, const int16_t *w1, int32_t run_len, int32_t start,
                                  int32_t n, int32_t zp, int32_t *acc0, int32_t *acc1)
{
    int32_t j = start;
    const int32_t end = start + n;
    int32_t a0 = *acc0, a1 = *acc1;
#if NUPES_USE_DSP
    const int32_t groups_end = run_len & ~3;
    const int32_t zp2 = (int32_t)(((uint32_t)(uint16_t)zp) | ((uint32_t)(uint16_t)zp << 16));
    for (; j < end && (j & 3); ++j) {
        const int32_t xv = (int32_t)x[j - start] - zp;
        const int32_t slot = nupes_run_slot(j, run_len);
        a0 += (int32_t)w0[slot] * xv;
        a1 += (int32_t)w1[slot] * xv;
    }
    for (; j + 4 <= end && j + 4 <= groups_end; j += 4) {
        const int32_t x4 = nupes_read32(x + (j - start));
        const int32_t x02 = nupes_ssub16(nupes_sxtb16(x4), zp2);
        const int32_t x13 = nupes_ssub16(nupes_sxtb16_ror8(x4), zp2);
        a0 = nupes_smlad(x02, nupes_read32(w0 + j), a0);
        a0 = nupes_smlad(x13, nupes_read32(w0 + j + 2), a0);
        a1 = nupes_smlad(x02, nupes_read32(w1 + j), a1);
        a1 = nupes_smlad(x13, nupes_read32(w1 + j + 2), a1);
    }
#endif
    for (; j < end; ++j) {
        const int32_t xv = (int32_t)x[j - start] - zp;
        const int32_t slot = nupes_run_slot(j, run_len);
        a0 += (int32_t)w0[slot] * xv;
        a1 += (int32_t)w1[slot] * xv;
    }
    *acc0 = a0;
    *acc1 = a1;
}

#endif /* NUPES_DOT_H */
