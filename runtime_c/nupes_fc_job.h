/*
 * nupes_fc_job.h - what the two dense kernels with unpacked-at-load weights share
 * (nupes_fully_connected_s8.c, nupes_fully_connected_pairs.c): the job one inner loop runs (the
 * sums of 4 or 2 rows over the whole groups of four columns), the lane operations its C definition
 * uses (nupes_dsp.h's portable lane operations on hosts), and the per-output requantization.
 *
 * As in nupes_conv2d_im2col.c: the C definition of each job is what the host builds run (portable,
 * -DNUPES_NO_DSP, and DSP-emulated, -DNUPES_DSP_EMULATE) and what defines the semantics; on a real
 * Cortex-M with the DSP extension (NUPES_ASM) the same jobs are whole functions in Thumb-2
 * assembly with fixed register use, reading the job at the fixed offsets below.
 */
#ifndef NUPES_FC_JOB_H
#define NUPES_FC_JOB_H

#include <stdint.h>

#include "nupes_dsp.h"
#include "nupes_fixedpoint.h"
#include "nupes_kernels.h"

/*
 * One job: rows o, o+1 (.., o+3 in a four-row job), row o at `row`, each next row rb bytes on;
 * their sums over the columns [0, 4 * groups). Either (bias NULL) the sums are left in acc and the
 * job ends, or (the fused path, k % 4 == 0 and levels not shifted) each row's sum starts from its
 * folded bias and its output
 *     out = clamp(out_zp + MBQM(bias + sum, mult, shift), lo, hi)
 * is stored; bias, mult, shift and out move on by the rows done, row by as many rows, and the job
 * runs again until npasses are done. It stops early, before storing anything of a pass, at a pass
 * with a shift outside -31..-1 (the caller sees how far `out` got). A two-row job with rb = 0 runs
 * row o as its own twin (an odd last row; sums only). Offsets are fixed: the assembly reads them.
 */
typedef struct {
    const int8_t *in;      /*  0: the input, column 0 */
    const uint8_t *row;    /*  4: row o */
    int32_t rb;            /*  8: bytes per row (0: row o twice) */
    int32_t groups;        /* 12: k / 4, >= 1 */
    const uint32_t *pairs; /* 16: 2- / 4-bit rows: the table of level pairs */
    int32_t acc[4];        /* 20: the sums of rows o, o+1 (, o+2, o+3) when bias is NULL */
    const int32_t *bias;   /* 36: the folded bias of row o; NULL: one pass, sums only */
    const int32_t *mult;   /* 40: the multiplier of row o */
    const int32_t *shift;  /* 44: its shift */
    int8_t *out;           /* 48: the output of row o */
    int32_t npasses;       /* 52: >= 1 */
    int32_t out_zp;        /* 56 */
    int32_t lo, hi;        /* 60, 64: the clamp */
    int32_t full;          /* 68: lo, hi = -128, 127 (the clamp is one SSAT) */
} nupes_fc_job_t;

typedef void (*nupes_fc_fn_t)(nupes_fc_job_t *j);

/* out_zp + MBQM(acc, mult, shift), clamped (docs/numerics.md), for any shift: nupes_fixedpoint.h's
 * fused form (the rows outside the jobs' fused path). */
static inline int8_t nupes_fc_requantize(int32_t acc, int32_t mult, int32_t shift, int32_t out_zp, int32_t lo,
                                         int32_t hi)
{
    nupes_rq_t q;
    nupes_rq_init(&q, mult, shift);
    return nupes_clamp_s8(nupes_rq_apply(acc, &q) + out_zp, lo, hi);
}

#if !NUPES_ASM
/*
 * The jobs' requantization, for a right shift e = -shift in 1..31, s = e - 1 in 0..30:
 *     MBQM(acc) = floor((2^30 + (2^s - [acc < 0]) * 2^31 + acc * mult) / 2^32) >> s
 * i.e. nupes_fixedpoint.h's nested floors floor((acc*mult + 2^30 + 2^(30+e) - [acc < 0]*2^31) /
 * 2^(31+e)) with the constant built from s in three instructions (y = 2^s - [acc < 0]: the low word
 * y << 31 | 2^30, the high word y >> 1) and one SMLAL; the high word shifted by s. |acc * mult| <
 * 2^62 and y * 2^31 <= 2^61: no overflow. Checked against the reference on the board and host.
 */
static inline int32_t nupes_fc_rq_fused(int32_t acc, int32_t mult, int32_t shift)
{
    const int32_t s = -shift - 1;
    const int64_t y = ((int64_t)1 << s) - (acc < 0 ? 1 : 0);
    const int64_t num = ((int64_t)1 << 30) + y * ((int64_t)1 << 31) + (int64_t)acc * mult;
    return (int32_t)(num >> 32) >> s; /* arithmetic shifts: floor */
}

/* Where row i's sum of a pass starts: its folded bias (fused path) or 0. */
static inline int32_t nupes_fc_sum0(const nupes_fc_job_t *j, int32_t i)
{
    return j->bias ? j->bias[i] : 0;
}

/* After the sums of one pass of nrows rows (the portable form of the assembly's tail): the sums
 * left in acc, or the outputs and the move to the next pass; 0 when the job is done (or stopped
 * at a shift outside the fused path). */
static inline int32_t nupes_fc_finish(nupes_fc_job_t *j, int32_t nrows, const int32_t *acc)
{
    int32_t i;
    if (j->bias == 0) {
        for (i = 0; i < 4; ++i) {
            j->acc[i] = acc[i];
        }
        return 0;
    }
    for (i = 0; i < nrows; ++i) {
        if ((uint32_t)(-j->shift[i] - 1) > 30u) {
            return 0;
        }
    }
    for (i = 0; i < nrows; ++i) {
        j->out[i] = nupes_clamp_s8(nupes_fc_rq_fused(acc[i], j->mult[i], j->shift[i]) + j->out_zp, j->lo, j->hi);
    }
    j->bias += nrows;
    j->mult += nrows;
    j->shift += nrows;
    j->out += nrows;
    j->row += nrows * j->rb;
    return --j->npasses;
}
#endif

/* The job's fields for the whole layer (pairs: the table the jobs read). */
static inline void nupes_fc_start(nupes_fc_job_t *j, const int8_t *in, int32_t k, const nupes_layer_t *w,
                                  const uint32_t *pairs)
{
    j->in = in;
    j->groups = k >> 2;
    j->pairs = pairs;
    j->out_zp = w->out_zp;
    j->lo = w->act_min;
    j->hi = w->act_max;
    j->full = w->act_min == -128 && w->act_max == 127;
}

/* Outside the fused path: the sums over the whole groups of the rows from o, n of them (4, 2, or 1:
 * an odd last row run as its own twin), left in j->acc by the jobs four / two; returns n. */
static inline int32_t nupes_fc_sums(nupes_fc_job_t *j, const nupes_layer_t *w, int32_t o, int32_t out_n,
                                    nupes_fc_fn_t four, nupes_fc_fn_t two)
{
    const int32_t left = out_n - o, n = left >= 4 ? 4 : (left >= 2 ? 2 : 1);
    j->row = w->packed + o * w->row_bytes;
    j->rb = n == 1 ? 0 : w->row_bytes;
    j->bias = 0;
    j->npasses = 1;
    j->acc[0] = j->acc[1] = j->acc[2] = j->acc[3] = 0;
    if (j->groups > 0) {
        (n == 4 ? four : two)(j);
    }
    return n;
}

/* The fused path (whole groups: k % 4 == 0, k > 0): four rows a pass, then two, every output stored
 * by the jobs (which move row, bias, mult, shift and out on as they go). Returns the rows done: all
 * but an odd last one, or fewer when a job stopped at a shift outside -31..-1 (the caller does the
 * rest). */
static inline int32_t nupes_fc_fused(nupes_fc_job_t *j, const nupes_layer_t *w, int8_t *out, int32_t out_n,
                                     nupes_fc_fn_t four, nupes_fc_fn_t two)
{
    j->row = w->packed;
    j->rb = w->row_bytes;
    j->bias = w->bias;
    j->mult = w->mult;
    j->shift = w->shift;
    j->out = out;
    if (out_n >= 4) {
        j->npasses = out_n >> 2;
        four(j);
    }
    if ((out_n & 2) && j->out == out + (out_n & ~3)) {
        j->npasses = 1;
        two(j);
    }
    return (int32_t)(j->out - out);
}

/*
 * The Thumb-2 head and tail shared by the jobs. The sums start from the biases (fused path) or 0,
 * in r5..r8. The tail, per output (registers r0..r4, r9..r12, lr free): a shift outside -31..-1
 * stops the job (5:); the requantization above into the sum's register, r12 = r4 << s with r4 = 1;
 * then the clamp, the stores, the next pass. r2 r3: mult, shift; r0: out_zp.
 */
#if NUPES_ASM
#define NUPES_FC_RQ(ACC)                           \
    "ldr r9, [r3], #4\n\t"                         \
    "mvn r9, r9\n\t"                               \
    "cmp r9, #30\n\t"                              \
    "bhi 5f\n\t"                                   \
    "lsl r12, r4, r9\n\t"                          \
    "add r12, r12, " ACC ", asr #31\n\t"           \
    "lsl r10, r12, #31\n\t"                        \
    "orr r10, r10, #0x40000000\n\t"                \
    "lsr r11, r12, #1\n\t"                         \
    "ldr lr, [r2], #4\n\t"                         \
    "smlal r10, r11, " ACC ", lr\n\t"              \
    "asr " ACC ", r11, r9\n\t"                     \
    "add " ACC ", " ACC ", r0\n\t"
#define NUPES_FC_CLAMP(ACC)                        \
    "cmp " ACC ", r10\n\t"                         \
    "it lt\n\t"                                    \
    "movlt " ACC ", r10\n\t"                       \
    "cmp " ACC ", r11\n\t"                         \
    "it gt\n\t"                                    \
    "movgt " ACC ", r11\n\t"
/* The tail after a pass's loop: sums only (bias NULL: into acc, return), or the requantization of
 * the rows (RQS, NB = 4 * rows: the biases read), the clamp (SSATS: lo, hi = -128, 127; CLAMPS:
 * r10, r11 = lo, hi), the stores, row += rows * rb (LOG2N), the next pass (9:) or the return. */
#define NUPES_FC_TAIL(RQS, NB, SSATS, CLAMPS, STORES, LOG2N) \
    "ldr r0, [sp]\n\t"                             \
    "ldr r1, [r0, #36]\n\t"                        \
    "cmp r1, #0\n\t"                               \
    "beq 8f\n\t"                                   \
    "ldrd r2, r3, [r0, #40]\n\t"                   \
    "movs r4, #1\n\t"                              \
    "ldr r0, [r0, #56]\n\t"                        \
    RQS                                            \
    "ldr r0, [sp]\n\t"                             \
    "add r1, r1, #" NB "\n\t"                      \
    "add r9, r0, #36\n\t"                          \
    "stm r9, {r1-r3}\n\t"                          \
    "ldr r9, [r0, #48]\n\t"                        \
    "ldr r10, [r0, #68]\n\t"                       \
    "cmp r10, #0\n\t"                              \
    "beq 7f\n\t"                                   \
    SSATS                                          \
    "b 6f\n\t"                                     \
    "7:\n\t"                                       \
    "ldrd r10, r11, [r0, #60]\n\t"                 \
    CLAMPS                                         \
    "6:\n\t"                                       \
    STORES                                         \
    "str r9, [r0, #48]\n\t"                        \
    "ldrd r1, r2, [r0, #4]\n\t"                    \
    "add r1, r1, r2, lsl #" LOG2N "\n\t"           \
    "str r1, [r0, #4]\n\t"                         \
    "ldr r2, [r0, #52]\n\t"                        \
    "subs r2, r2, #1\n\t"                          \
    "str r2, [r0, #52]\n\t"                        \
    "bne 9b\n\t"                                   \
    "pop {r0, r4-r11, pc}\n\t"                     \
    "8:\n\t"                                       \
    "add r1, r0, #20\n\t"                          \
    "stm r1, {r5-r8}\n\t"                          \
    "pop {r0, r4-r11, pc}\n\t"                     \
    "5:\n\t"                                       \
    "pop {r0, r4-r11, pc}\n\t"
#define NUPES_FC_TAIL4                                                                              \
    NUPES_FC_TAIL(NUPES_FC_RQ("r5") NUPES_FC_RQ("r6") NUPES_FC_RQ("r7") NUPES_FC_RQ("r8"), "16",        \
                  "ssat r5, #8, r5\n\tssat r6, #8, r6\n\tssat r7, #8, r7\n\tssat r8, #8, r8\n\t",        \
                  NUPES_FC_CLAMP("r5") NUPES_FC_CLAMP("r6") NUPES_FC_CLAMP("r7") NUPES_FC_CLAMP("r8"),   \
                  "strb r5, [r9], #1\n\tstrb r6, [r9], #1\n\tstrb r7, [r9], #1\n\tstrb r8, [r9], #1\n\t", "2")
#define NUPES_FC_TAIL2                                                                              \
    NUPES_FC_TAIL(NUPES_FC_RQ("r5") NUPES_FC_RQ("r6"), "8", "ssat r5, #8, r5\n\tssat r6, #8, r6\n\t",  \
                  NUPES_FC_CLAMP("r5") NUPES_FC_CLAMP("r6"), "strb r5, [r9], #1\n\tstrb r6, [r9], #1\n\t", "1")
/* The job's first fields in r0..r4 (input, row, rb, groups, pairs); the sums from the biases (INIT,
 * fused path) or 0; row o+2 in ROW2; the loop count in pairs of groups, an odd group first
 * (entering the loop at 2:) */
#define NUPES_FC_HEAD(ROW2, INIT)                  \
    "push {r0, r4-r11, lr}\n\t"                    \
    "9:\n\t"                                       \
    "ldr r5, [r0, #36]\n\t"                        \
    "ldm r0, {r0-r4}\n\t"                          \
    "cbnz r5, 3f\n\t"                              \
    "movs r5, #0\n\t"                              \
    "movs r6, #0\n\t"                              \
    "movs r7, #0\n\t"                              \
    "movs r8, #0\n\t"                              \
    "b 4f\n\t"                                     \
    "3:\n\t"                                       \
    INIT "\n\t"                                    \
    "4:\n\t"                                       \
    "add " ROW2 ", r1, r2, lsl #1\n\t"             \
    "lsrs r3, r3, #1\n\t"                          \
    "bcc 1f\n\t"                                   \
    "adds r3, r3, #1\n\t"                          \
    "b 2f\n\t"
#define NUPES_FC_INIT4 "ldm r5, {r5-r8}"
#define NUPES_FC_INIT2 "ldm r5, {r5, r6}"
#define NUPES_FC_LOOP_END                          \
    "subs r3, r3, #1\n\t"                          \
    "bne 1b\n\t"
#endif

#endif /* NUPES_FC_JOB_H */
