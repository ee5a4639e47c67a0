#include "nupes_dot.h"
#include "nupes_fixedpoint.h"
#include "nupes_kernels.h"

/* The level of column j of a row (groups of four stored (c0, c2, c1, c3), see nupes_kernels.h). */
static int32_t nupes_pairs_level(const uint8_t *row, int32_t bits, const uint32_t *pairs, int32_t j)
{
    const int32_t lane = j & 3;                                      /* 0, 1, 2, 3 */
    const int32_t field = (j & ~3) / 2 + ((lane & 1) ? 1 : 0);       /* which pair of the row */
    const int32_t fbits = 2 * bits;
    const uint32_t pos = (uint32_t)(field * fbits);
    const uint32_t idx = ((uint32_t)row[pos >> 3] >> (pos & 7u)) & ((1u << fbits) - 1u); /* fbits = 4 or 8 */
    const uint32_t pair = pairs[idx];
    return (int16_t)(lane >= 2 ? pair >> 16 : pair & 0xFFFFu);
}

/*
 * Dense layer with 2- or 4-bit codes, decoded and multiplied in one pass: one table load gives
 * two levels already in SXTB16's lane order. acc = bias' + sum w * x (bias' folded at build time,
 * as in nupes_fully_connected_s8). DSP path, two rows per pass, per four columns: 1 LDR + 2 SXTB16
 * for the inputs, per row 2 field extracts + 2 table LDR + 2 SMLAD. Measured (benchmarks/speed.py):
 * digits' 128 -> 10 layer at 4 bits, 3,828 emulated instructions, 3.0 per MAC with the
 * requantization of its 10 outputs.
 */
void nupes_fully_connected_pairs(const int8_t *in, int8_t *out, int32_t k, int32_t out_n, const nupes_layer_t *w)
{
    const int32_t groups = k >> 2;
    const uint32_t *pairs = w->pairs;
    int32_t o = 0, j;
#if NUPES_USE_DSP
    for (; o + 1 < out_n; o += 2) {
        const uint8_t *r0 = w->packed + o * w->row_bytes, *r1 = r0 + w->row_bytes;
        int32_t s0 = 0, s1 = 0, gi;
        nupes_rq_t q;
        if (w->bits == 4) { /* a group is two bytes: (c0, c2) and (c1, c3) */
            for (gi = 0; gi < groups; ++gi) {
                const int32_t x4 = nupes_read32(in + 4 * gi);
                const int32_t x02 = nupes_sxtb16(x4), x13 = nupes_sxtb16_ror8(x4);
                s0 = nupes_smlad(x02, (int32_t)pairs[r0[2 * gi]], s0);
                s0 = nupes_smlad(x13, (int32_t)pairs[r0[2 * gi + 1]], s0);
                s1 = nupes_smlad(x02, (int32_t)pairs[r1[2 * gi]], s1);
                s1 = nupes_smlad(x13, (int32_t)pairs[r1[2 * gi + 1]], s1);
            }
        } else { /* 2 bits: a group is one byte, (c0, c2) in the low nibble */
            for (gi = 0; gi < groups; ++gi) {
                const int32_t x4 = nupes_read32(in + 4 * gi);
                const int32_t x02 = nupes_sxtb16(x4), x13 = nupes_sxtb16_ror8(x4);
                s0 = nupes_smlad(x02, (int32_t)pairs[r0[gi] & 15u], s0);
                s0 = nupes_smlad(x13, (int32_t)pairs[r0[gi] >> 4], s0);
                s1 = nupes_smlad(x02, (int32_t)pairs[r1[gi] & 15u], s1);
                s1 = nupes_smlad(x13, (int32_t)pairs[r1[gi] >> 4], s1);
            }
        }
        for (j = 4 * groups; j < k; ++j) {
            s0 += nupes_pairs_level(r0, w->bits, pairs, j) * in[j];
            s1 += nupes_pairs_level(r1, w->bits, pairs, j) * in[j];
        }
        nupes_rq_init(&q, w->mult[o], w->shift[o]);
        out[o] = nupes_clamp_s8(nupes_rq_apply(w->bias[o] + s0, &q) + w->out_zp, w->act_min, w->act_max);
        nupes_rq_init(&q, w->mult[o + 1], w->shift[o + 1]);
        out[o + 1] = nupes_clamp_s8(nupes_rq_apply(w->bias[o + 1] + s1, &q) + w->out_zp, w->act_min, w->act_max);
    }
#else
    (void)groups;
#endif
    for (; o < out_n; ++o) { /* the portable path, and an odd last row */
        const uint8_t *r = w->packed + o * w->row_bytes;
        int32_t s = 0;
        for (j = 0; j < k; ++j) {
            s += nupes_pairs_level(r, w->bits, pairs, j) * in[j];
        }
        out[o] = nupes_clamp_s8(nupes_requantize(w->bias[o] + s, w->mult[o], w->shift[o]) + w->out_zp, w->act_min,
                                w->act_max);
    }
}
