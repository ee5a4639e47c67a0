#include "nupes_dot.h"
#include "nupes_fixedpoint.h"
#include "nupes_kernels.h"

/*
 * Dense layer with levels = codes << lshift, codes stored as int8 (see nupes_kernels.h): the
 * weights unpack like the inputs, so nothing is decoded. acc = bias' + (sum w_code * x) << lshift
 * with bias' = bias - zp * sum(levels) folded at build time; |sum w_code * x| << lshift stays
 * within 128 * sum|levels| <= acc_bound. DSP path: two rows per pass share every input word:
 * per four columns 1 LDR + 2 SXTB16 for the inputs, per row 1 LDR + 2 SXTB16 + 2 SMLAD (13
 * instructions per 8 MACs before loop overhead). Measured (benchmarks/speed.py): digits'
 * 128 -> 10 layer, 3,130 emulated instructions, 2.4 per MAC with the requantization.
 */
void nupes_fully_connected_s8(const int8_t *in, int8_t *out, int32_t k, int32_t out_n, const nupes_layer_t *w)
{
    const int8_t *codes = (const int8_t *)w->packed;
    const int32_t scale = (int32_t)1 << w->lshift;
    int32_t o = 0, j;
#if NUPES_USE_DSP
    for (; o + 1 < out_n; o += 2) {
        const int8_t *r0 = codes + o * w->row_bytes, *r1 = r0 + w->row_bytes;
        int32_t s0 = 0, s1 = 0;
        nupes_rq_t q;
        for (j = 0; j + 4 <= k; j += 4) {
            const int32_t x4 = nupes_read32(in + j);
            const int32_t x02 = nupes_sxtb16(x4), x13 = nupes_sxtb16_ror8(x4);
            const int32_t a = nupes_read32(r0 + j), b = nupes_read32(r1 + j);
            s0 = nupes_smlad(x02, nupes_sxtb16(a), s0);
            s0 = nupes_smlad(x13, nupes_sxtb16_ror8(a), s0);
            s1 = nupes_smlad(x02, nupes_sxtb16(b), s1);
            s1 = nupes_smlad(x13, nupes_sxtb16_ror8(b), s1);
        }
        for (; j < k; ++j) {
            s0 += (int32_t)r0[j] * in[j];
            s1 += (int32_t)r1[j] * in[j];
        }
        nupes_rq_init(&q, w->mult[o], w->shift[o]);
        out[o] = nupes_clamp_s8(nupes_rq_apply(w->bias[o] + s0 * scale, &q) + w->out_zp, w->act_min, w->act_max);
        nupes_rq_init(&q, w->mult[o + 1], w->shift[o + 1]);
        out[o + 1] = nupes_clamp_s8(nupes_rq_apply(w->bias[o + 1] + s1 * scale, &q) + w->out_zp, w->act_min, w->act_max);
    }
#endif
    for (; o < out_n; ++o) { /* the portable path, and an odd last row */
        const int8_t *r = codes + o * w->row_bytes;
        int32_t s = 0;
        for (j = 0; j < k; ++j) {
            s += (int32_t)r[j] * in[j];
        }
        out[o] = nupes_clamp_s8(nupes_requantize(w->bias[o] + s * scale, w->mult[o], w->shift[o]) + w->out_zp, w->act_min,
                                w->act_max);
    }
}
