#include "nupes_fc_job.h"
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
 * as in nupes_fully_connected_s8). Rows are taken four at a time (then two, then an odd last one
 * as its own twin), so each input word is loaded and widened once for four rows. The jobs
 * (nupes_fc_job.h) sum the whole groups of four columns and, when k % 4 == 0 and the shifts suit the
 * fused requantization, store the outputs; the other rows (an odd last one, the last k % 4 columns
 * of a partial group padded with zero codes, other shifts) are finished here.
 */

#if !NUPES_ASM
/* The C definition of the jobs: nrows = 4 or 2 rows; per group of four columns, the input word
 * widened into (x0, x2), (x1, x3) and, per row, the two fields (c0, c2), (c1, c3) looked up. */
static void nupes_fc_pairs_rows(nupes_fc_job_t *j, int32_t nrows, int32_t bits)
{
    do {
        int32_t acc[4] = {0, 0, 0, 0}, i;
        for (i = 0; i < nrows; ++i) {
            const int8_t *x = j->in;
            const uint8_t *r = j->row + i * j->rb;
            int32_t s = nupes_fc_sum0(j, i), n;
            for (n = 0; n < j->groups; ++n, x += 4) {
                const int32_t x4 = nupes_read32(x);
                uint32_t f02, f13;
                if (bits == 4) { /* a group is two bytes: (c0, c2) and (c1, c3) */
                    f02 = r[2 * n];
                    f13 = r[2 * n + 1];
                } else { /* 2 bits: a group is one byte, (c0, c2) in the low nibble (the table: every byte) */
                    f02 = r[n];
                    f13 = (uint32_t)r[n] >> 4;
                }
                s = nupes_smlad(nupes_sxtb16(x4), (int32_t)j->pairs[f02], s);
                s = nupes_smlad(nupes_sxtb16_ror8(x4), (int32_t)j->pairs[f13], s);
            }
            acc[i] = s;
        }
        if (!nupes_fc_finish(j, nrows, acc)) {
            return;
        }
    } while (1);
}
static void nupes_fc_p4_rows4(nupes_fc_job_t *j) { nupes_fc_pairs_rows(j, 4, 4); }
static void nupes_fc_p4_rows2(nupes_fc_job_t *j) { nupes_fc_pairs_rows(j, 2, 4); }
static void nupes_fc_p2_rows4(nupes_fc_job_t *j) { nupes_fc_pairs_rows(j, 4, 2); }
static void nupes_fc_p2_rows2(nupes_fc_job_t *j) { nupes_fc_pairs_rows(j, 2, 2); }
/* 2 bits: the jobs' table, pairs[b & 15] for every byte b */
static void nupes_fc_p2_table(uint32_t *t, const uint32_t *pairs)
{
    int32_t i;
    for (i = 0; i < 256; ++i) {
        t[i] = pairs[i & 15];
    }
}
#define NUPES_FC_P4_4 nupes_fc_p4_rows4
#define NUPES_FC_P4_2 nupes_fc_p4_rows2
#define NUPES_FC_P2_4 nupes_fc_p2_rows4
#define NUPES_FC_P2_2 nupes_fc_p2_rows2

#else
/*
 * The same jobs in Thumb-2 (whole functions, fixed registers: GCC's loops spilled). Registers:
 * r0 input, r1 row o, r2 rb, r3 count, r4 the pair table, r5..r8 the sums of rows o..o+3, r9 r10
 * the widened input pair (x0, x2), (x1, x3), r11 row o+2, r12 a field / a level pair, lr a byte
 * of 2-bit codes. Per group of four columns: 1 LDR + 2 SXTB16 for the input, per row
 *   4 bits: 2 x (LDRB field with post-increment, LDR pair, SMLAD)             (6)
 *   2 bits: LDRB, LSR for the high field, 2 x (LDR pair, SMLAD)              (6)
 * (four rows: 27 instructions per 16 MACs; two groups per loop pass; 2 bits read a table of 256
 * entries on the stack, pairs[b & 15] for every byte b, so the low field needs no mask). Then
 * nupes_fc_job.h's tail: about 15 instructions per output (the requantization, SSAT or a two-sided
 * clamp, STRB).
 */
#define NUPES_FC_FIELD(ACC, X, LOAD)               \
    LOAD "\n\t"                                    \
    "ldr r12, [r4, r12, lsl #2]\n\t"               \
    "smlad " ACC ", " X ", r12, " ACC "\n\t"
#define NUPES_FC_INPUT                             \
    "ldr r9, [r0], #4\n\t"                         \
    "sxtb16 r10, r9, ror #8\n\t"                   \
    "sxtb16 r9, r9\n\t"
/* 4 bits: the row's bytes (c0, c2), (c1, c3); the row at P + rb before the one at P moves on */
#define NUPES_FC_P4_ROWS(A0, A1, P)                \
    NUPES_FC_FIELD(A1, "r9", "ldrb r12, [" P ", r2]") \
    NUPES_FC_FIELD(A0, "r9", "ldrb r12, [" P "], #1") \
    NUPES_FC_FIELD(A1, "r10", "ldrb r12, [" P ", r2]") \
    NUPES_FC_FIELD(A0, "r10", "ldrb r12, [" P "], #1")
/* 2 bits: one byte, (c0, c2) in the low nibble; the table (256 entries, pairs[b & 15]) takes the
 * whole byte */
#define NUPES_FC_P2_ROW(ACC, LOAD)                 \
    LOAD "\n\t"                                    \
    "ldr r12, [r4, lr, lsl #2]\n\t"                \
    "smlad " ACC ", r9, r12, " ACC "\n\t"          \
    NUPES_FC_FIELD(ACC, "r10", "lsr r12, lr, #4")
#define NUPES_FC_P4_GROUP4 NUPES_FC_INPUT NUPES_FC_P4_ROWS("r5", "r6", "r1") NUPES_FC_P4_ROWS("r7", "r8", "r11")
#define NUPES_FC_P4_GROUP2 NUPES_FC_INPUT NUPES_FC_P4_ROWS("r5", "r6", "r1")
#define NUPES_FC_P2_GROUP4                         \
    NUPES_FC_INPUT                                 \
    NUPES_FC_P2_ROW("r6", "ldrb lr, [r1, r2]")     \
    NUPES_FC_P2_ROW("r5", "ldrb lr, [r1], #1")     \
    NUPES_FC_P2_ROW("r8", "ldrb lr, [r11, r2]")    \
    NUPES_FC_P2_ROW("r7", "ldrb lr, [r11], #1")
#define NUPES_FC_P2_GROUP2                         \
    NUPES_FC_INPUT                                 \
    NUPES_FC_P2_ROW("r6", "ldrb lr, [r1, r2]")     \
    NUPES_FC_P2_ROW("r5", "ldrb lr, [r1], #1")
#define NUPES_FC_JOB(NAME, GROUP, INIT, TAIL)                                                        \
    __attribute__((naked, noinline)) static void NAME(nupes_fc_job_t *j)                              \
    {                                                                                                \
        __asm__ volatile(NUPES_FC_HEAD("r11", INIT) "1:\n\t" GROUP "2:\n\t" GROUP NUPES_FC_LOOP_END TAIL); \
    }

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-parameter"
NUPES_FC_JOB(nupes_fc_p4_rows4_asm, NUPES_FC_P4_GROUP4, NUPES_FC_INIT4, NUPES_FC_TAIL4)
NUPES_FC_JOB(nupes_fc_p4_rows2_asm, NUPES_FC_P4_GROUP2, NUPES_FC_INIT2, NUPES_FC_TAIL2)
NUPES_FC_JOB(nupes_fc_p2_rows4_asm, NUPES_FC_P2_GROUP4, NUPES_FC_INIT4, NUPES_FC_TAIL4)
NUPES_FC_JOB(nupes_fc_p2_rows2_asm, NUPES_FC_P2_GROUP2, NUPES_FC_INIT2, NUPES_FC_TAIL2)
/* The 16 pairs, then the table copied onto itself 16 words on (it repeats every 16 words), 12 words
 * at a time: about 50 instructions */
__attribute__((naked, noinline)) static void nupes_fc_p2_table_asm(uint32_t *t, const uint32_t *pairs)
{
    __asm__ volatile(
        "push {r4-r11, lr}\n\t"
        "ldm r1!, {r2-r9}\n\t"
        "stm r0!, {r2-r9}\n\t"
        "ldm r1, {r2-r9}\n\t"
        "stm r0!, {r2-r9}\n\t"
        "sub r1, r0, #64\n\t"
        ".rept 20\n\t"
        "ldm r1!, {r2-r12, lr}\n\t"
        "stm r0!, {r2-r12, lr}\n\t"
        ".endr\n\t"
        "pop {r4-r11, pc}\n\t");
}
#pragma GCC diagnostic pop
#undef NUPES_FC_FIELD
#undef NUPES_FC_INPUT
#undef NUPES_FC_P4_ROWS
#undef NUPES_FC_P2_ROW
#undef NUPES_FC_P4_GROUP4
#undef NUPES_FC_P4_GROUP2
#undef NUPES_FC_P2_GROUP4
#undef NUPES_FC_P2_GROUP2
#undef NUPES_FC_JOB
#define nupes_fc_p2_table nupes_fc_p2_table_asm
#define NUPES_FC_P4_4 nupes_fc_p4_rows4_asm
#define NUPES_FC_P4_2 nupes_fc_p4_rows2_asm
#define NUPES_FC_P2_4 nupes_fc_p2_rows4_asm
#define NUPES_FC_P2_2 nupes_fc_p2_rows2_asm
#endif

/* The rows from o the jobs did not finish: their sums over the whole groups, then the last k % 4
 * columns (a group padded with zero codes) and the requantization here, for any shift. */
static NUPES_NOINLINE void nupes_fc_pairs_rest(nupes_fc_job_t *j, int8_t *out, int32_t k, int32_t out_n,
                                                const nupes_layer_t *w, int32_t o, nupes_fc_fn_t four, nupes_fc_fn_t two)
{
    const int32_t rb = w->row_bytes, groups = k >> 2, bits = w->bits;
    const int32_t out_zp = w->out_zp, lo = w->act_min, hi = w->act_max;
    const int32_t *bias = w->bias, *mult = w->mult, *shift = w->shift;
    while (o < out_n) {
        const int32_t n = nupes_fc_sums(j, w, o, out_n, four, two);
        int32_t i;
        for (i = 0; i < n; ++i, ++o) {
            const uint8_t *r = w->packed + o * rb;
            int32_t s = j->acc[i], c;
            for (c = 4 * groups; c < k; ++c) {
                s += nupes_pairs_level(r, bits, w->pairs, c) * j->in[c];
            }
            out[o] = nupes_fc_requantize(bias[o] + s, mult[o], shift[o], out_zp, lo, hi);
        }
    }
}

/* One layer with the jobs four and two reading `pairs`. */
static NUPES_NOINLINE void nupes_fc_pairs_run(const int8_t *in, int8_t *out, int32_t k, int32_t out_n,
                                               const nupes_layer_t *w, const uint32_t *pairs, nupes_fc_fn_t four,
                                               nupes_fc_fn_t two)
{
    nupes_fc_job_t j;
    int32_t o = 0;
    nupes_fc_start(&j, in, k, w, pairs);
    if ((k & 3) == 0 && k > 0) { /* the fused path (the jobs start from the biases) */
        o = nupes_fc_fused(&j, w, out, out_n, four, two);
    }
    if (o < out_n) {
        nupes_fc_pairs_rest(&j, out, k, out_n, w, o, four, two);
    }
}

/* One entry point per width, so a model links only the jobs its layers use. */
void nupes_fully_connected_p4(const int8_t *in, int8_t *out, int32_t k, int32_t out_n, const nupes_layer_t *w)
{
    nupes_fc_pairs_run(in, out, k, out_n, w, w->pairs, NUPES_FC_P4_4, NUPES_FC_P4_2);
}

/* 2 bits: the jobs read a table of 256 entries on the stack (1 KB), pairs[b & 15] for every byte b
 * (only this width pays the stack). */
void nupes_fully_connected_p2(const int8_t *in, int8_t *out, int32_t k, int32_t out_n, const nupes_layer_t *w)
{
    uint32_t table[256];
    nupes_fc_p2_table(table, w->pairs);
    nupes_fc_pairs_run(in, out, k, out_n, w, table, NUPES_FC_P2_4, NUPES_FC_P2_2);
}
