#include "nupes_fc_job.h"
#include "nupes_kernels.h"

/*
 * Dense layer with levels = codes << lshift, codes stored as int8 (see nupes_kernels.h): the
 * weights unpack like the inputs, so nothing is decoded. acc = bias' + (sum w_code * x) << lshift
 * with bias' = bias - zp * sum(levels) folded at build time; |sum w_code * x| << lshift stays
 * within 128 * sum|levels| <= acc_bound, and so does every partial sum. Rows are taken four at a
 * time (then two, then an odd last one as its own twin): each input word is loaded and widened
 * once for four rows. The jobs (nupes_fc_job.h) sum the whole groups of four columns and, when k % 4
 * == 0, lshift == 0 and the shifts suit the fused requantization, store the outputs; the other rows
 * (an odd last one, the last k % 4 columns, other shifts, lshift > 0) are finished here.
 */

#if !NUPES_ASM
/* The C definition of the jobs: nrows = 4 or 2 rows, each group of four columns one input word
 * widened into (x0, x2), (x1, x3) and, per row, one weight word widened the same way. */
static void nupes_fc_s8_rows(nupes_fc_job_t *j, int32_t nrows)
{
    do {
        int32_t acc[4] = {0, 0, 0, 0}, i;
        for (i = 0; i < nrows; ++i) {
            const int8_t *x = j->in;
            const int8_t *r = (const int8_t *)j->row + i * j->rb;
            int32_t s = nupes_fc_sum0(j, i), n;
            for (n = j->groups; n > 0; --n, x += 4, r += 4) {
                const int32_t x4 = nupes_read32(x), w4 = nupes_read32(r);
                s = nupes_smlad(nupes_sxtb16(x4), nupes_sxtb16(w4), s);
                s = nupes_smlad(nupes_sxtb16_ror8(x4), nupes_sxtb16_ror8(w4), s);
            }
            acc[i] = s;
        }
        if (!nupes_fc_finish(j, nrows, acc)) {
            return;
        }
    } while (1);
}
static void nupes_fc_s8_rows4(nupes_fc_job_t *j) { nupes_fc_s8_rows(j, 4); }
static void nupes_fc_s8_rows2(nupes_fc_job_t *j) { nupes_fc_s8_rows(j, 2); }
#define NUPES_FC_S8_4 nupes_fc_s8_rows4
#define NUPES_FC_S8_2 nupes_fc_s8_rows2

#else
/*
 * The same jobs in Thumb-2 (whole functions, fixed registers: GCC's loops spilled). Registers in
 * the loop: r0 input, r1 row o, r2 rb, r3 count, r4 row o+2, r5..r8 the sums of rows o..o+3, r9
 * r10 the widened input pair (x0, x2), (x1, x3), r11 a weight word, r12 its widened pair. Per group
 * of four columns: 1 LDR + 2 SXTB16 for the input, per row 1 LDR + 2 SXTB16 + 2 SMLAD (four rows:
 * 23 instructions per 16 MACs; two groups per loop pass). Then nupes_fc_job.h's tail: about 15
 * instructions per output (the requantization, SSAT or a two-sided clamp, STRB).
 */
#define NUPES_FC_S8_ROW(ACC, LOAD)                 \
    LOAD "\n\t"                                    \
    "sxtb16 r12, r11\n\t"                          \
    "smlad " ACC ", r9, r12, " ACC "\n\t"          \
    "sxtb16 r12, r11, ror #8\n\t"                  \
    "smlad " ACC ", r10, r12, " ACC "\n\t"
#define NUPES_FC_S8_INPUT                          \
    "ldr r9, [r0], #4\n\t"                         \
    "sxtb16 r10, r9, ror #8\n\t"                   \
    "sxtb16 r9, r9\n\t"
#define NUPES_FC_S8_GROUP4                         \
    NUPES_FC_S8_INPUT                              \
    NUPES_FC_S8_ROW("r6", "ldr r11, [r1, r2]")     \
    NUPES_FC_S8_ROW("r5", "ldr r11, [r1], #4")     \
    NUPES_FC_S8_ROW("r8", "ldr r11, [r4, r2]")     \
    NUPES_FC_S8_ROW("r7", "ldr r11, [r4], #4")
#define NUPES_FC_S8_GROUP2                         \
    NUPES_FC_S8_INPUT                              \
    NUPES_FC_S8_ROW("r6", "ldr r11, [r1, r2]")     \
    NUPES_FC_S8_ROW("r5", "ldr r11, [r1], #4")

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-parameter"
__attribute__((naked, noinline)) static void nupes_fc_s8_rows4_asm(nupes_fc_job_t *j)
{
    __asm__ volatile(
        NUPES_FC_HEAD("r4", NUPES_FC_INIT4)
        "1:\n\t"
        NUPES_FC_S8_GROUP4
        "2:\n\t"
        NUPES_FC_S8_GROUP4
        NUPES_FC_LOOP_END
        NUPES_FC_TAIL4);
}

__attribute__((naked, noinline)) static void nupes_fc_s8_rows2_asm(nupes_fc_job_t *j)
{
    __asm__ volatile(
        NUPES_FC_HEAD("r4", NUPES_FC_INIT2)
        "1:\n\t"
        NUPES_FC_S8_GROUP2
        "2:\n\t"
        NUPES_FC_S8_GROUP2
        NUPES_FC_LOOP_END
        NUPES_FC_TAIL2);
}
#pragma GCC diagnostic pop
#undef NUPES_FC_S8_ROW
#undef NUPES_FC_S8_INPUT
#undef NUPES_FC_S8_GROUP4
#undef NUPES_FC_S8_GROUP2
#define NUPES_FC_S8_4 nupes_fc_s8_rows4_asm
#define NUPES_FC_S8_2 nupes_fc_s8_rows2_asm
#endif

/* The rows from o the jobs did not finish: their sums over the whole groups, then the last k % 4
 * columns and the requantization here, for any shift. */
static NUPES_NOINLINE void nupes_fc_s8_rest(nupes_fc_job_t *j, int8_t *out, int32_t k, int32_t out_n,
                                             const nupes_layer_t *w, int32_t o)
{
    const int8_t *codes = (const int8_t *)w->packed;
    const int32_t rb = w->row_bytes, groups = k >> 2, scale = (int32_t)1 << w->lshift;
    const int32_t out_zp = w->out_zp, lo = w->act_min, hi = w->act_max;
    const int32_t *bias = w->bias, *mult = w->mult, *shift = w->shift;
    while (o < out_n) {
        const int32_t n = nupes_fc_sums(j, w, o, out_n, NUPES_FC_S8_4, NUPES_FC_S8_2);
        int32_t i;
        for (i = 0; i < n; ++i, ++o) {
            const int8_t *r = codes + o * rb;
            int32_t s = j->acc[i], c;
            for (c = 4 * groups; c < k; ++c) { /* the last k % 4 columns */
                s += (int32_t)r[c] * j->in[c];
            }
            out[o] = nupes_fc_requantize(bias[o] + s * scale, mult[o], shift[o], out_zp, lo, hi);
        }
    }
}

void nupes_fully_connected_s8(const int8_t *in, int8_t *out, int32_t k, int32_t out_n, const nupes_layer_t *w)
{
    nupes_fc_job_t j;
    int32_t o = 0;
    nupes_fc_start(&j, in, k, w, 0);
    if ((k & 3) == 0 && k > 0 && w->lshift == 0) { /* the fused path (the jobs start from the biases) */
        o = nupes_fc_fused(&j, w, out, out_n, NUPES_FC_S8_4, NUPES_FC_S8_2);
    }
    if (o < out_n) {
        nupes_fc_s8_rest(&j, out, k, out_n, w, o);
    }
}
