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

#if NUPES_USE_DSP
/*
 * Two output channels x two output positions over one whole run, no zero point (the caller folds
 * zp * sum(w) into the bias): xa, xb are the two positions' inputs, w0, w1 the two channels'
 * levels in run order. Every input word is loaded and unpacked once for two channels and every
 * weight word once for two positions: per four MACs of each of the four outputs, 2 LDR inputs,
 * 4 SXTB16, 4 LDR weights, 8 SMLAD, about 1.2 instructions per MAC.
 */
/* One group of four levels of nupes_dot22_run: 2 LDR inputs, 4 SXTB16, 4 LDR weights, 8 SMLAD. */
#define NUPES_DOT22_GROUP(x, xb_off, w, w1_off)                    \
    do {                                                          \
        const int32_t xa4_ = nupes_read32(x);                     \
        const int32_t xb4_ = nupes_read32((x) + (xb_off));        \
        const int32_t a02_ = nupes_sxtb16(xa4_);                  \
        const int32_t a13_ = nupes_sxtb16_ror8(xa4_);             \
        const int32_t b02_ = nupes_sxtb16(xb4_);                  \
        const int32_t b13_ = nupes_sxtb16_ror8(xb4_);             \
        int32_t wv_ = nupes_read32(w);                            \
        a00 = nupes_smlad(a02_, wv_, a00);                        \
        a01 = nupes_smlad(b02_, wv_, a01);                        \
        wv_ = nupes_read32((w) + 2);                              \
        a00 = nupes_smlad(a13_, wv_, a00);                        \
        a01 = nupes_smlad(b13_, wv_, a01);                        \
        wv_ = nupes_read32((w) + (w1_off));                       \
        a10 = nupes_smlad(a02_, wv_, a10);                        \
        a11 = nupes_smlad(b02_, wv_, a11);                        \
        wv_ = nupes_read32((w) + (w1_off) + 2);                   \
        a10 = nupes_smlad(a13_, wv_, a10);                        \
        a11 = nupes_smlad(b13_, wv_, a11);                        \
    } while (0)

static inline void nupes_dot22_run(const int8_t *xa, const int8_t *xb, const int16_t *w0, const int16_t *w1, int32_t run,
                                   int32_t acc[4])
{
    int32_t a00 = acc[0], a01 = acc[1], a10 = acc[2], a11 = acc[3]; /* a<channel><position> */
    const int32_t xb_off = (int32_t)(xb - xa), w1_off = (int32_t)(w1 - w0);
    const int8_t *x = xa;
    const int16_t *w = w0;
    int32_t groups = run >> 2, j;
    /* one pointer each for inputs and weights, the second position / channel at a fixed offset:
     * with four accumulators this keeps the loop within the core registers (about 21
     * instructions per 16 MACs; unrolling twice measured slower: it spills) */
    for (; groups > 0; --groups, x += 4, w += 4) {
        NUPES_DOT22_GROUP(x, xb_off, w, w1_off);
    }
    j = run & ~3;
    for (; j < run; ++j) { /* the run's tail is stored in plain order */
        a00 += (int32_t)w0[j] * xa[j];
        a01 += (int32_t)w0[j] * xb[j];
        a10 += (int32_t)w1[j] * xa[j];
        a11 += (int32_t)w1[j] * xb[j];
    }
    acc[0] = a00;
    acc[1] = a01;
    acc[2] = a10;
    acc[3] = a11;
}

/* Two output channels x one position over n levels (n a multiple of four, starting on a group
 * boundary), no zero point: 1 LDR input, 2 SXTB16, 4 LDR weights, 4 SMLAD per eight MACs. */
static inline void nupes_dot21_groups(const int8_t *x, const int16_t *w0, const int16_t *w1, int32_t n, int32_t *acc0,
                                      int32_t *acc1)
{
    int32_t a0 = *acc0, a1 = *acc1, j;
    for (j = 0; j < n; j += 4) {
        const int32_t x4 = nupes_read32(x + j);
        const int32_t x02 = nupes_sxtb16(x4), x13 = nupes_sxtb16_ror8(x4);
        a0 = nupes_smlad(x02, nupes_read32(w0 + j), a0);
        a0 = nupes_smlad(x13, nupes_read32(w0 + j + 2), a0);
        a1 = nupes_smlad(x02, nupes_read32(w1 + j), a1);
        a1 = nupes_smlad(x13, nupes_read32(w1 + j + 2), a1);
    }
    *acc0 = a0;
    *acc1 = a1;
}
#endif

#endif /* NUPES_DOT_H */
