#include <string.h>

#include "nupes_dsp.h"
#include "nupes_fixedpoint.h"
#include "nupes_kernels.h"
#include "nupes_window.h"

/*
 * Convolution with in_c % 4 == 0 whose weights are 8-bit identity levels (int8 rows, lut NULL) or
 * 2- / 4-bit codes read through a table of level pairs (layouts: nupes_kernels.h; chosen and laid
 * out by codegen/plan.py, im2col_shape / im2col_data). Output positions are taken
 * two at a time (in raster order, so a pair may span two output rows; an odd last position is
 * computed twice). For each pair the two windows are written once into scratch as int16 lane
 * pairs (im2col): per group of four input values x0..x3 of a tap, the words
 *     (xa0, xa2), (xb0, xb2), (xa1, xa3), (xb1, xb3)          (a, b: the two positions)
 * i.e. SXTB16's lanes, so one LDRD gives the same lanes of both positions. A tap outside the image
 * holds in_zp, and the bias is folded at build time (bias' = bias - in_zp * sum of the row's
 * levels), so acc = bias' + sum w * x' is exactly bias + sum over the in-image taps of
 * w * (x - in_zp): the border costs nothing in the inner loop. Then every pair of output channels
 * runs over the whole window, two channels x two positions per step: each weight pair is decoded
 * once for two positions and each window word loaded once for two channels.
 * Bounds: |x'| <= 128 <= X (docs/numerics.md), so every partial sum of w * x' is within
 * 128 * sum|w| <= acc_bound, and bias' is added last (acc is then the true accumulator).
 * Scratch: 2 * k_h * k_w * in_c int16 entries (k int32 words), int32-aligned.
 */

int32_t nupes_conv2d_im2col_get_buffer_size(const nupes_conv_geom_t *g)
{
    return 2 * g->k_h * g->k_w * g->in_c * (int32_t)sizeof(int16_t);
}

/* One position's window into the words col[4j + p] and col[4j + 2 + p] of group j (p = 0 or 1):
 * per kernel row, in_zp for the taps left of the image, the in-image taps (contiguous in HWC),
 * in_zp for the taps right of it; a kernel row outside the image is in_zp throughout. */
static void nupes_i2c_fill(const int8_t *in, const nupes_conv_geom_t *g, int32_t zp2, int32_t iy0, int32_t ix0,
                           int32_t *col)
{
    const int32_t in_c = g->in_c, row = g->k_w * in_c;
    int32_t ky_lo, ky_hi, kx_lo, kx_hi, ky, j;
    nupes_window_taps(iy0, g->k_h, g->in_h, &ky_lo, &ky_hi);
    nupes_window_taps(ix0, g->k_w, g->in_w, &kx_lo, &kx_hi);
    if (kx_hi <= kx_lo) { /* (cannot happen with padding < kernel; kept total) */
        ky_hi = ky_lo;
    }
    for (ky = 0; ky < g->k_h; ++ky) {
        int32_t *end = col + 4 * (row >> 2);
        if (ky >= ky_lo && ky < ky_hi) {
            const int8_t *px = in + ((iy0 + ky) * g->in_w + ix0 + kx_lo) * in_c;
            int32_t *mid = col + kx_lo * in_c, *stop = col + kx_hi * in_c;
            for (; col < mid; col += 4) {
                col[0] = zp2;
                col[2] = zp2;
            }
            for (j = 0; col < stop; j += 4, col += 4) {
                const int32_t x4 = nupes_read32(px + j);
                col[0] = nupes_sxtb16(x4);
                col[2] = nupes_sxtb16_ror8(x4);
            }
        }
        for (; col < end; col += 4) {
            col[0] = zp2;
            col[2] = zp2;
        }
    }
}

/*
 * Requantization (docs/numerics.md's MBQM, out_zp added, then the clamp). For a right shift
 * e = -shift in 1..23, nupes_fixedpoint.h's fused form with the zero point folded in:
 *     MBQM(acc) + out_zp = floor((acc*mult + K + [acc >= 0]*2^31) / 2^(32+s)),  s = e - 1,
 *     K = 2^30 + 2^(30+e) - 2^31 + out_zp*2^(32+s)
 * (adding out_zp*2^(32+s) inside the floor adds exactly out_zp outside it). |acc*mult| < 2^62 and
 * |K| < 2^61 (s <= 22): no overflow. As words, s >= 1: K = (out_zp*2^s + 2^(s-1) - 1) * 2^32 +
 * 0xC0000000; s = 0: K = out_zp * 2^32 + 2^30. A layer with any other shift takes the plain
 * nupes_requantize. The records of NUPES_I2C_CHUNK channels live on the stack (16 bytes each).
 */
#define NUPES_I2C_CHUNK 32
typedef struct {
    int32_t mult, s;
    uint32_t k_lo;
    int32_t k_hi;
} nupes_i2c_rq_t;

/*
 * The work on one window pair: for npairs pairs of output channels (oc, oc + 1) from oc, the sums
 * of channels x positions (a, b) over the whole window, then their four outputs; w, bias, rq, pa
 * and pb move on by two channels per pair. Offsets are fixed: the assembly below reads them.
 */
typedef struct {
    const int32_t *col;        /*  0: the window pair */
    const uint8_t *w;          /*  4: row oc */
    int32_t rb;                /*  8: bytes per row (0: an odd last channel runs as its own twin) */
    int32_t groups;            /* 12: k / 4, >= 1 */
    const uint32_t *pairs;     /* 16: 2 / 4 bits: the pair table */
    const int32_t *bias;       /* 20: bias + oc (folded biases) */
    const nupes_i2c_rq_t *rq;  /* 24: the record of oc; NULL: one pair, its sums left in acc */
    int8_t *pa, *pb;           /* 28, 32: the outputs of (position a, channel oc), (b, oc) */
    int32_t npairs;            /* 36: >= 1 */
    int32_t lo, hi;            /* 40, 44: the clamp */
    int32_t full;              /* 48: lo, hi = -128, 127 (the clamp is one SSAT) */
    int32_t acc[4];            /* 52: a00, a01, a10, a11 when rq is NULL */
} nupes_i2c_job_t;

static inline int8_t nupes_i2c_rq(int32_t acc, const nupes_i2c_rq_t *r, int32_t lo, int32_t hi)
{
    int64_t num = (int64_t)(((uint64_t)(uint32_t)r->k_hi << 32) | r->k_lo);
    int32_t v;
    num += (int64_t)acc * r->mult + (int64_t)(((uint32_t)~acc >> 31) << 31);
    v = (int32_t)(num >> 32) >> r->s; /* arithmetic shifts: floor */
    return (int8_t)(v < lo ? lo : (v > hi ? hi : v));
}

/* Whether every channel's shift allows the records (the fused path): -23 <= shift <= -1. */
static int32_t nupes_i2c_fast(const nupes_layer_t *w, int32_t out_c)
{
    int32_t oc, fast = 1;
    for (oc = 0; oc < out_c; ++oc) {
        fast &= w->shift[oc] <= -1 && w->shift[oc] >= -23;
    }
    return fast;
}

/* The records of channels [c0, c1) into rq[0 .. c1 - c0). */
static void nupes_i2c_rq_chunk(nupes_i2c_rq_t *rq, const nupes_layer_t *w, int32_t c0, int32_t c1)
{
    int32_t oc;
    for (oc = c0; oc < c1; ++oc) {
        nupes_i2c_rq_t *r = &rq[oc - c0];
        const int32_t s = -w->shift[oc] - 1;
        r->mult = w->mult[oc];
        r->s = s;
        r->k_hi = (int32_t)((uint32_t)w->out_zp << s) + (s ? (1 << (s - 1)) - 1 : 0);
        r->k_lo = s ? 0xC0000000u : 0x40000000u;
    }
}

#if !NUPES_ASM
/* The four outputs of one channel pair from its sums, and the move to the next pair (the
 * portable form of the assembly's tail); 0 when the job is done. */
static int32_t nupes_i2c_finish(nupes_i2c_job_t *j, int32_t a00, int32_t a01, int32_t a10, int32_t a11)
{
    j->w += 2 * j->rb;
    if (j->rq == 0) {
        j->acc[0] = a00;
        j->acc[1] = a01;
        j->acc[2] = a10;
        j->acc[3] = a11;
        return 0;
    }
    j->pa[0] = nupes_i2c_rq(a00 + j->bias[0], &j->rq[0], j->lo, j->hi);
    j->pb[0] = nupes_i2c_rq(a01 + j->bias[0], &j->rq[0], j->lo, j->hi);
    j->pa[1] = nupes_i2c_rq(a10 + j->bias[1], &j->rq[1], j->lo, j->hi);
    j->pb[1] = nupes_i2c_rq(a11 + j->bias[1], &j->rq[1], j->lo, j->hi);
    j->bias += 2;
    j->rq += 2;
    j->pa += 2;
    j->pb += 2;
    return --j->npairs;
}

/* Rows of int8 levels: per group one word per channel, unpacked by SXTB16. */
static void nupes_i2c_job_s8(nupes_i2c_job_t *j)
{
    do {
    const int32_t *col = j->col;
    const int8_t *w = (const int8_t *)j->w;
    const int32_t rb = j->rb;
    int32_t a00 = 0, a01 = 0, a10 = 0, a11 = 0, n;
    for (n = j->groups; n > 0; --n, col += 4, w += 4) {
        const int32_t w0 = nupes_read32(w), w1 = nupes_read32(w + rb);
        int32_t t0 = nupes_sxtb16(w0), t1 = nupes_sxtb16(w1);
        a00 = nupes_smlad(col[0], t0, a00);
        a01 = nupes_smlad(col[1], t0, a01);
        a10 = nupes_smlad(col[0], t1, a10);
        a11 = nupes_smlad(col[1], t1, a11);
        t0 = nupes_sxtb16_ror8(w0);
        t1 = nupes_sxtb16_ror8(w1);
        a00 = nupes_smlad(col[2], t0, a00);
        a01 = nupes_smlad(col[3], t0, a01);
        a10 = nupes_smlad(col[2], t1, a10);
        a11 = nupes_smlad(col[3], t1, a11);
    }
    if (!nupes_i2c_finish(j, a00, a01, a10, a11)) {
        return;
    }
    } while (1);
}

/* Rows of 4-bit codes: per group two bytes, the pair fields (c0, c2) and (c1, c3); rows of 2-bit
 * codes: per group one byte, (c0, c2) in the low nibble. */
static void nupes_i2c_job_pairs(nupes_i2c_job_t *j, int32_t bits)
{
    do {
    const int32_t *col = j->col;
    const uint8_t *w = j->w;
    const uint32_t *pairs = j->pairs;
    const int32_t rb = j->rb;
    int32_t a00 = 0, a01 = 0, a10 = 0, a11 = 0, n;
    for (n = 0; n < j->groups; ++n, col += 4) {
        uint32_t f0, f1, h0, h1;
        int32_t t0, t1;
        if (bits == 4) {
            f0 = w[2 * n];
            f1 = w[2 * n + rb];
            h0 = w[2 * n + 1];
            h1 = w[2 * n + 1 + rb];
        } else {
            f0 = w[n] & 15u;
            f1 = w[n + rb] & 15u;
            h0 = (uint32_t)w[n] >> 4;
            h1 = (uint32_t)w[n + rb] >> 4;
        }
        t0 = (int32_t)pairs[f0];
        t1 = (int32_t)pairs[f1];
        a00 = nupes_smlad(col[0], t0, a00);
        a01 = nupes_smlad(col[1], t0, a01);
        a10 = nupes_smlad(col[0], t1, a10);
        a11 = nupes_smlad(col[1], t1, a11);
        t0 = (int32_t)pairs[h0];
        t1 = (int32_t)pairs[h1];
        a00 = nupes_smlad(col[2], t0, a00);
        a01 = nupes_smlad(col[3], t0, a01);
        a10 = nupes_smlad(col[2], t1, a10);
        a11 = nupes_smlad(col[3], t1, a11);
    }
    if (!nupes_i2c_finish(j, a00, a01, a10, a11)) {
        return;
    }
    } while (1);
}
static void nupes_i2c_job_p4(nupes_i2c_job_t *j) { nupes_i2c_job_pairs(j, 4); }
static void nupes_i2c_job_p2(nupes_i2c_job_t *j) { nupes_i2c_job_pairs(j, 2); }
#define NUPES_I2C_S8 nupes_i2c_job_s8
#define NUPES_I2C_P4 nupes_i2c_job_p4
#define NUPES_I2C_P2 nupes_i2c_job_p2

#else
/*
 * The same jobs in Thumb-2 for the Cortex-M DSP extension (the C above is their definition, and
 * what the host builds run; the emulated board checks these against the reference). Whole
 * functions, so the register use is fixed (GCC's own loops reloaded window words and spilled).
 * Per group of four taps, two channels x two positions (16 MACs):
 *   8 bits: 2 LDR weights, 4 SXTB16, 2 LDRD window, 8 SMLAD            (+1 loop per 2 groups)
 *   4 bits: 1 LDR codes per 2 groups, 4 field extracts, 4 LDR pairs, 2 LDRD, 8 SMLAD (+1 per 2)
 *   2 bits: 1 LDR codes per 4 groups, 4 UBFX, 4 LDR pairs, 2 LDRD, 8 SMLAD (+1 per 4)
 * Registers in the loops: r0 window, r1 row oc, r2 rb, r3 count, r4 pair table, r5..r8 the sums
 * a00, a01, a10, a11, r9 r10 codes / weights, r11 r12 window words, lr scratch. The job pointer
 * stays on the stack. Then the tail requantizes the four sums (fused form above: LDRD K, MVN +
 * SMLAL for [acc >= 0]*2^31, SMLAL, ASR, the clamp, STRB), about 12 instructions per output.
 */
#define NUPES_I2C_RQ1(ACC, KOFF, CLAMP)            \
    "ldrd r2, r3, [r1, #" KOFF "]\n\t"             \
    "mvn r11, " ACC ", asr #31\n\t"                \
    "smlal r2, r3, r11, r12\n\t"                   \
    "smlal r2, r3, " ACC ", r4\n\t"                \
    "asr r3, r3, lr\n\t"                           \
    CLAMP
#define NUPES_I2C_CLAMP                            \
    "cmp r3, r9\n\t"                               \
    "it lt\n\t"                                    \
    "movlt r3, r9\n\t"                             \
    "cmp r3, r10\n\t"                              \
    "it gt\n\t"                                    \
    "movgt r3, r10\n\t"
#define NUPES_I2C_SSAT "ssat r3, #8, r3\n\t"
/* the four outputs; pa, pb move on by two channels */
#define NUPES_I2C_RQ4(CLAMP)                       \
    "ldrd r4, lr, [r1]\n\t"                        \
    NUPES_I2C_RQ1("r5", "8", CLAMP)                \
    "ldr r5, [r0, #28]\n\t"                        \
    "strb r3, [r5]\n\t"                            \
    NUPES_I2C_RQ1("r6", "8", CLAMP)                \
    "ldr r6, [r0, #32]\n\t"                        \
    "strb r3, [r6]\n\t"                            \
    "ldrd r4, lr, [r1, #16]\n\t"                   \
    NUPES_I2C_RQ1("r7", "24", CLAMP)               \
    "strb r3, [r5, #1]\n\t"                        \
    NUPES_I2C_RQ1("r8", "24", CLAMP)               \
    "strb r3, [r6, #1]\n\t"                        \
    "adds r5, r5, #2\n\t"                          \
    "adds r6, r6, #2\n\t"                          \
    "strd r5, r6, [r0, #28]\n\t"

/* After a pair's loop (r1: the end of row oc): the next pair's row, then the requantization, or
 * the sums left in acc; the next pair or the return. */
#define NUPES_I2C_TAIL                             \
    "ldr r0, [sp]\n\t"                             \
    "add r1, r1, r2\n\t"                           \
    "str r1, [r0, #4]\n\t"                         \
    "ldr r1, [r0, #24]\n\t"                        \
    "cmp r1, #0\n\t"                               \
    "beq 8f\n\t"                                   \
    "ldr r2, [r0, #20]\n\t"                        \
    "ldrd r3, r4, [r2], #8\n\t"                    \
    "str r2, [r0, #20]\n\t"                        \
    "add r5, r5, r3\n\t"                           \
    "add r6, r6, r3\n\t"                           \
    "add r7, r7, r4\n\t"                           \
    "add r8, r8, r4\n\t"                           \
    "mov r12, #0x80000000\n\t"                     \
    "ldr r9, [r0, #48]\n\t"                        \
    "cmp r9, #0\n\t"                               \
    "beq 7f\n\t"                                   \
    NUPES_I2C_RQ4(NUPES_I2C_SSAT)                  \
    "b 6f\n\t"                                     \
    "7:\n\t"                                       \
    "ldrd r9, r10, [r0, #40]\n\t"                  \
    NUPES_I2C_RQ4(NUPES_I2C_CLAMP)                 \
    "6:\n\t"                                       \
    "add r1, r1, #32\n\t"                          \
    "str r1, [r0, #24]\n\t"                        \
    "ldr r2, [r0, #36]\n\t"                        \
    "subs r2, r2, #1\n\t"                          \
    "str r2, [r0, #36]\n\t"                        \
    "bne 9b\n\t"                                   \
    "pop {r0, r4-r11, pc}\n\t"                     \
    "8:\n\t"                                       \
    "add r1, r0, #52\n\t"                          \
    "stm r1, {r5-r8}\n\t"                          \
    "pop {r0, r4-r11, pc}\n\t"

#define NUPES_I2C_HEAD                             \
    "push {r0, r4-r11, lr}\n\t"                    \
    "9:\n\t"                                       \
    "ldm r0, {r0-r4}\n\t"                          \
    "movs r5, #0\n\t"                              \
    "movs r6, #0\n\t"                              \
    "movs r7, #0\n\t"                              \
    "movs r8, #0\n\t"

/* One group of int8 levels. */
#define NUPES_I2C_S8_GROUP                         \
    "ldr r10, [r1, r2]\n\t"                        \
    "ldr r9, [r1], #4\n\t"                         \
    "ldrd r11, r12, [r0], #8\n\t"                  \
    "sxtb16 lr, r9\n\t"                            \
    "smlad r5, r11, lr, r5\n\t"                    \
    "smlad r6, r12, lr, r6\n\t"                    \
    "sxtb16 lr, r10\n\t"                           \
    "smlad r7, r11, lr, r7\n\t"                    \
    "smlad r8, r12, lr, r8\n\t"                    \
    "ldrd r11, r12, [r0], #8\n\t"                  \
    "sxtb16 lr, r9, ror #8\n\t"                    \
    "smlad r5, r11, lr, r5\n\t"                    \
    "smlad r6, r12, lr, r6\n\t"                    \
    "sxtb16 lr, r10, ror #8\n\t"                   \
    "smlad r7, r11, lr, r7\n\t"                    \
    "smlad r8, r12, lr, r8\n\t"

/* One group of pair fields: E0..E3 put the table index of (channel 0, lanes 0/2), (channel 1,
 * lanes 0/2), (channel 0, lanes 1/3), (channel 1, lanes 1/3) into lr. */
#define NUPES_I2C_PAIR_GROUP(E0, E1, E2, E3)       \
    "ldrd r11, r12, [r0], #8\n\t"                  \
    E0 "\n\t"                                      \
    "ldr lr, [r4, lr, lsl #2]\n\t"                 \
    "smlad r5, r11, lr, r5\n\t"                    \
    "smlad r6, r12, lr, r6\n\t"                    \
    E1 "\n\t"                                      \
    "ldr lr, [r4, lr, lsl #2]\n\t"                 \
    "smlad r7, r11, lr, r7\n\t"                    \
    "smlad r8, r12, lr, r8\n\t"                    \
    "ldrd r11, r12, [r0], #8\n\t"                  \
    E2 "\n\t"                                      \
    "ldr lr, [r4, lr, lsl #2]\n\t"                 \
    "smlad r5, r11, lr, r5\n\t"                    \
    "smlad r6, r12, lr, r6\n\t"                    \
    E3 "\n\t"                                      \
    "ldr lr, [r4, lr, lsl #2]\n\t"                 \
    "smlad r7, r11, lr, r7\n\t"                    \
    "smlad r8, r12, lr, r8\n\t"

/* naked: the job pointer is read by the assembly, in r0 */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-parameter"
__attribute__((naked, noinline)) static void nupes_i2c_s8_asm(nupes_i2c_job_t *j)
{
    __asm__ volatile(
        NUPES_I2C_HEAD
        "lsrs r3, r3, #1\n\t"     /* pairs of groups; carry: an odd one first */
        "bcc 1f\n\t"
        "adds r3, r3, #1\n\t"
        "b 2f\n\t"
        "1:\n\t"
        NUPES_I2C_S8_GROUP
        "2:\n\t"
        NUPES_I2C_S8_GROUP
        "subs r3, r3, #1\n\t"
        "bne 1b\n\t"
        NUPES_I2C_TAIL);
}

__attribute__((naked, noinline)) static void nupes_i2c_p4_asm(nupes_i2c_job_t *j)
{
    __asm__ volatile(
        NUPES_I2C_HEAD
        "lsrs r3, r3, #1\n\t"
        "bcc 1f\n\t"
        "ldrh r10, [r1, r2]\n\t"  /* an odd group first: two bytes per channel */
        "ldrh r9, [r1], #2\n\t"
        NUPES_I2C_PAIR_GROUP("uxtb lr, r9", "uxtb lr, r10", "lsr lr, r9, #8", "lsr lr, r10, #8")
        "1:\n\t"
        "cmp r3, #0\n\t"
        "beq 3f\n\t"
        "2:\n\t"
        "ldr r10, [r1, r2]\n\t"   /* two groups per channel */
        "ldr r9, [r1], #4\n\t"
        NUPES_I2C_PAIR_GROUP("uxtb lr, r9", "uxtb lr, r10", "uxtb lr, r9, ror #8", "uxtb lr, r10, ror #8")
        NUPES_I2C_PAIR_GROUP("uxtb lr, r9, ror #16", "uxtb lr, r10, ror #16", "lsr lr, r9, #24", "lsr lr, r10, #24")
        "subs r3, r3, #1\n\t"
        "bne 2b\n\t"
        "3:\n\t"
        NUPES_I2C_TAIL);
}

__attribute__((naked, noinline)) static void nupes_i2c_p2_asm(nupes_i2c_job_t *j)
{
    __asm__ volatile(
        NUPES_I2C_HEAD
        "ands r9, r3, #3\n\t"     /* groups % 4 single groups first: one byte per channel */
        "beq 1f\n\t"
        "sub r3, r3, r9\n\t"
        "push {r3}\n\t"
        "mov r3, r9\n\t"
        "4:\n\t"
        "ldrb r10, [r1, r2]\n\t"
        "ldrb r9, [r1], #1\n\t"
        NUPES_I2C_PAIR_GROUP("and lr, r9, #15", "and lr, r10, #15", "lsr lr, r9, #4", "lsr lr, r10, #4")
        "subs r3, r3, #1\n\t"
        "bne 4b\n\t"
        "pop {r3}\n\t"
        "1:\n\t"
        "lsrs r3, r3, #2\n\t"
        "beq 3f\n\t"
        "2:\n\t"
        "ldr r10, [r1, r2]\n\t"   /* four groups per channel */
        "ldr r9, [r1], #4\n\t"
        NUPES_I2C_PAIR_GROUP("ubfx lr, r9, #0, #4", "ubfx lr, r10, #0, #4", "ubfx lr, r9, #4, #4", "ubfx lr, r10, #4, #4")
        NUPES_I2C_PAIR_GROUP("ubfx lr, r9, #8, #4", "ubfx lr, r10, #8, #4", "ubfx lr, r9, #12, #4", "ubfx lr, r10, #12, #4")
        NUPES_I2C_PAIR_GROUP("ubfx lr, r9, #16, #4", "ubfx lr, r10, #16, #4", "ubfx lr, r9, #20, #4", "ubfx lr, r10, #20, #4")
        NUPES_I2C_PAIR_GROUP("ubfx lr, r9, #24, #4", "ubfx lr, r10, #24, #4", "ubfx lr, r9, #28, #4", "lsr lr, r10, #28")
        "subs r3, r3, #1\n\t"
        "bne 2b\n\t"
        "3:\n\t"
        NUPES_I2C_TAIL);
}
#pragma GCC diagnostic pop
#undef NUPES_I2C_RQ1
#undef NUPES_I2C_RQ4
#undef NUPES_I2C_CLAMP
#undef NUPES_I2C_SSAT
#undef NUPES_I2C_TAIL
#undef NUPES_I2C_HEAD
#undef NUPES_I2C_S8_GROUP
#undef NUPES_I2C_PAIR_GROUP
#define NUPES_I2C_S8 nupes_i2c_s8_asm
#define NUPES_I2C_P4 nupes_i2c_p4_asm
#define NUPES_I2C_P2 nupes_i2c_p2_asm
#endif

typedef void (*nupes_i2c_fn_t)(nupes_i2c_job_t *j);

static NUPES_NOINLINE void nupes_i2c_run(const int8_t *in, int8_t *out, const nupes_conv_geom_t *g,
                                         const nupes_layer_t *w, int16_t *scratch, nupes_i2c_fn_t job,
                                         const uint32_t *pairs)
{
    const int32_t k = g->k_h * g->k_w * g->in_c;
    const int32_t out_c = g->out_c, n = g->out_h * g->out_w;
    const int32_t zp = w->in_zp;
    const int32_t zp2 = (int32_t)(((uint32_t)(uint16_t)zp) | ((uint32_t)(uint16_t)zp << 16));
    int32_t *col = (int32_t *)(void *)scratch;
    nupes_i2c_rq_t rq[NUPES_I2C_CHUNK];
    nupes_i2c_job_t j;
    int32_t c0, oc;
    /* locals: the int8 output stores could alias the layer struct */
    const int32_t out_zp = w->out_zp, rb = w->row_bytes, lo = w->act_min, hi = w->act_max;
    const int32_t *bias = w->bias;
    const int32_t fast = nupes_i2c_fast(w, out_c);
    j.col = col;
    j.groups = k >> 2;
    j.pairs = pairs;
    j.lo = lo;
    j.hi = hi;
    j.full = lo == -128 && hi == 127;
    for (c0 = 0; c0 < out_c; c0 += NUPES_I2C_CHUNK) {
        const int32_t c1 = c0 + NUPES_I2C_CHUNK < out_c ? c0 + NUPES_I2C_CHUNK : out_c;
        const int32_t c_even = c0 + ((c1 - c0) & ~1); /* [c0, c_even): whole channel pairs */
        int32_t pos, oy = 0, ox = 0;
        if (fast) {
            nupes_i2c_rq_chunk(rq, w, c0, c1);
        }
        for (pos = 0; pos < n; pos += 2) {
            int8_t *pa = out + pos * out_c, *pb = pa + out_c;
            nupes_i2c_fill(in, g, zp2, oy * g->stride_h - g->pad_t, ox * g->stride_w - g->pad_l, col);
            if (++ox == g->out_w) {
                ox = 0;
                ++oy;
            }
            if (pos + 1 < n) {
                nupes_i2c_fill(in, g, zp2, oy * g->stride_h - g->pad_t, ox * g->stride_w - g->pad_l, col + 1);
                if (++ox == g->out_w) {
                    ox = 0;
                    ++oy;
                }
            } else { /* an odd last position runs as its own twin (b = a): its outputs are stored twice */
                int32_t i;
                for (i = 0; i < k; i += 2) {
                    col[i + 1] = col[i];
                }
                pb = pa;
            }
            j.rb = rb;
            if (fast && c_even > c0) { /* every channel pair in one job */
                j.w = w->packed + c0 * rb;
                j.bias = bias + c0;
                j.rq = rq;
                j.pa = pa + c0;
                j.pb = pb + c0;
                j.npairs = (c_even - c0) >> 1;
                job(&j);
            }
            for (oc = fast ? c_even : c0; oc < c1; oc += 2) {
                /* one pair at a time, its sums requantized here: the plain requantization, and
                 * an odd last channel (run as its own twin) */
                const int32_t pair = oc + 1 < c1;
                int32_t i;
                j.w = w->packed + oc * rb;
                j.rb = pair ? rb : 0;
                j.rq = 0;
                j.npairs = 1;
                job(&j);
                for (i = 0; i < 2 + 2 * pair; ++i) {
                    const int32_t o = oc + (i >> 1), acc = j.acc[i] + bias[o];
                    (i & 1 ? pb : pa)[o] = fast ? nupes_i2c_rq(acc, &rq[o - c0], lo, hi)
                                                : nupes_clamp_s8(nupes_requantize(acc, w->mult[o], w->shift[o]) + out_zp,
                                                                 lo, hi);
                }
            }
        }
    }
}

#if defined(__ARM_FEATURE_MVE)
#include "nupes_mve.h"

/* Helium (Cortex-M55): one position's window as int8 bytes in the rows' own (k_h, k_w, in_c) order,
 * in_zp for taps outside the image (the bias is folded as above), so a dot product of 16 bytes is one
 * VMLADAVA. */
static void nupes_i2c_mve_fill(const int8_t *in, const nupes_conv_geom_t *g, int32_t zp, int32_t iy0, int32_t ix0,
                               int8_t *col)
{
    const int32_t c = g->in_c, span = g->k_w * c;
    int32_t ky, kx;
    for (ky = 0; ky < g->k_h; ++ky, col += span) {
        const int32_t iy = iy0 + ky;
        if (iy < 0 || iy >= g->in_h) {
            memset(col, zp, (size_t)span);
            continue;
        }
        if (ix0 >= 0 && ix0 + g->k_w <= g->in_w) { /* the whole row of taps is in the image */
            memcpy(col, in + (iy * g->in_w + ix0) * c, (size_t)span);
            continue;
        }
        for (kx = 0; kx < g->k_w; ++kx) {
            const int32_t ix = ix0 + kx;
            if (ix < 0 || ix >= g->in_w) {
                memset(col + kx * c, zp, (size_t)c);
            } else {
                memcpy(col + kx * c, in + (iy * g->in_w + ix) * c, (size_t)c);
            }
        }
    }
}

/* Four positions' windows built once (scratch: 4 * k bytes, within the 2 * k int16 entries asked
 * for; a pointwise convolution with stride 1 and no padding reads its groups of four whole positions
 * straight from the input, k = in_c bytes apart, channel by channel, and only a last group of fewer
 * than four goes through scratch), then every output channel's row is loaded 16 bytes at a
 * time and multiplied into all four (VMLADAVA). The four sums are requantized at once
 * (nupes_mve.h: VQRDMULH and a rounding shift, exactly nupes_requantize, for every shift) and
 * stored by one scatter VSTRB, out_c bytes apart (predicated when fewer than four positions remain). */
static inline __attribute__((always_inline)) void nupes_i2c_mve(const int8_t *in, int8_t *out,
                                                                const nupes_conv_geom_t *g, const nupes_layer_t *w,
                                                                int16_t *scratch, const int32_t bits, const void *tbl,
                                                                int32_t e)
{
    const int32_t k = g->k_h * g->k_w * g->in_c, out_c = g->out_c, n = g->out_h * g->out_w;
    const int32_t zp = w->in_zp, out_zp = w->out_zp, lo = w->act_min, hi = w->act_max, rb = w->row_bytes;
    const int32_t direct = g->k_h == 1 && g->k_w == 1 && g->stride_h == 1 && g->stride_w == 1 && g->pad_t == 0 &&
                           g->pad_l == 0 && g->out_h == g->in_h && g->out_w == g->in_w;
    int8_t *const scr = (int8_t *)(void *)scratch;
    const uint32x4_t offs = vmulq_n_u32(vidupq_n_u32(0, 1), (uint32_t)out_c);
    const int32x4_t lo4 = vdupq_n_s32(lo), hi4 = vdupq_n_s32(hi);
    const int32_t whole = direct ? n & ~3 : 0; /* positions read in place, channel by channel */
    int32_t pos, oc, q;
    for (oc = 0; whole > 0 && oc < out_c; ++oc) {
        /* in place: each channel's row runs over every group of four positions, with its bias and
         * requantization held for the whole pass (per group only the dot loop and the tail) */
        const uint8_t *row = w->packed + oc * rb;
        const int32_t bias = w->bias[oc], mult = w->mult[oc], shift = w->shift[oc];
        const int8_t *col = in;
        int8_t *o = out + oc;
        for (pos = 0; pos < whole; pos += 4, col += 4 * k, o += 4 * out_c) {
            int32x4_t acc;
            if (bits == 8) {
                acc = nupes_mve_dot4_s8((const int8_t *)row, col, k, bias);
            } else {
                acc = bits == 4 ? nupes_mve_dot4_p4(row, col, k, (const int8_t *)tbl)
                                : nupes_mve_dot4_p2(row, col, k, (const uint32_t *)tbl);
                acc = vaddq_n_s32(vshlq_r_s32(acc, e), bias);
            }
            vstrbq_scatter_offset_s32(o, offs, nupes_mve_output1(acc, mult, shift, out_zp, lo4, hi4));
        }
    }
    for (pos = whole; pos < n; pos += 4) {
        const int32_t m = n - pos < 4 ? n - pos : 4;
        const mve_pred16_t pm = vctp32q((uint32_t)m);
        const int8_t *col = scr;
        if (direct && m == 4) {
            col = in + pos * k;
        } else {
            for (q = 0; q < 4; ++q) { /* a missing fourth position repeats the last one (its sums unused) */
                const int32_t p = pos + (q < m ? q : m - 1);
                const int32_t oy = p / g->out_w, ox = p - oy * g->out_w;
                nupes_i2c_mve_fill(in, g, zp, oy * g->stride_h - g->pad_t, ox * g->stride_w - g->pad_l, scr + q * k);
            }
        }
        for (oc = 0; oc < out_c; ++oc) {
            int32x4_t acc;
            if (bits == 8) {
                acc = nupes_mve_dot4_s8((const int8_t *)w->packed + oc * rb, col, k, w->bias[oc]);
            } else { /* int8 levels times 2^e: the sums shifted back, then the folded bias */
                acc = bits == 4 ? nupes_mve_dot4_p4(w->packed + oc * rb, col, k, (const int8_t *)tbl)
                                : nupes_mve_dot4_p2(w->packed + oc * rb, col, k, (const uint32_t *)tbl);
                acc = vaddq_n_s32(vshlq_r_s32(acc, e), w->bias[oc]);
            }
            vstrbq_scatter_offset_p_s32(out + pos * out_c + oc, offs,
                                        nupes_mve_output1(acc, w->mult[oc], w->shift[oc], out_zp, lo4, hi4), pm);
        }
    }
}
#endif

/* One entry point per weight format, so a model links only the loop it uses. */
void nupes_conv2d_im2col_s8(const int8_t *in, int8_t *out, const nupes_conv_geom_t *g, const nupes_layer_t *w,
                            int16_t *scratch)
{
#if defined(__ARM_FEATURE_MVE)
    (void)NUPES_I2C_S8; /* the DSP loop stays for the other cores */
    nupes_i2c_mve(in, out, g, w, scratch, 8, 0, 0);
#else
    nupes_i2c_run(in, out, g, w, scratch, NUPES_I2C_S8, 0);
#endif
}

/* The table of level pairs is made here from the layer's LUT, on the stack (4 bits: 1 KB for a
 * few hundred instructions, instead of 1 KB of flash per layer): pairs[f_lo | f_hi << b] =
 * (lut[f_lo], lut[f_hi]) in the (low, high) halves. */
void nupes_conv2d_im2col_p4(const int8_t *in, int8_t *out, const nupes_conv_geom_t *g, const nupes_layer_t *w,
                            int16_t *scratch)
{
    uint32_t pairs[256];
    int32_t hi, lo;
#if defined(__ARM_FEATURE_MVE)
    int8_t t8[16];
    const int32_t e = nupes_mve_lut8(w->lut, 16, t8);
    if (e >= 0) { /* int8 levels (times 2^e): decoded in Helium's loop */
        nupes_i2c_mve(in, out, g, w, scratch, 4, t8, e);
        return;
    }
#endif
    for (hi = 0; hi < 16; ++hi) {
        const uint32_t h = (uint32_t)(uint16_t)w->lut[hi] << 16;
        for (lo = 0; lo < 16; ++lo) {
            pairs[hi * 16 + lo] = h | (uint16_t)w->lut[lo];
        }
    }
    nupes_i2c_run(in, out, g, w, scratch, NUPES_I2C_P4, pairs);
}

void nupes_conv2d_im2col_p2(const int8_t *in, int8_t *out, const nupes_conv_geom_t *g, const nupes_layer_t *w,
                            int16_t *scratch)
{
    uint32_t pairs[16];
    int32_t i;
#if defined(__ARM_FEATURE_MVE)
    int8_t t8[4];
    const int32_t e = nupes_mve_lut8(w->lut, 4, t8);
    if (e >= 0) { /* always for a 2-bit table: a byte's four levels, in (c0, c1, c2, c3) order */
        /* the byte holds (c0, c2, c1, c3), two bits each: quads[hi << 4 | lo] = lows[lo] | highs[hi], the
         * low nibble giving c0 and c2 (bytes 0 and 2), the high one c1 and c3 (bytes 1 and 3); 16 rows
         * of four VORR + VSTRW */
        uint32_t quads[256], lows[16];
        for (i = 0; i < 16; ++i) {
            lows[i] = (uint32_t)(uint8_t)t8[i & 3] | (uint32_t)(uint8_t)t8[i >> 2] << 16;
        }
        {
            const uint32x4_t l0 = vld1q_u32(lows), l1 = vld1q_u32(lows + 4), l2 = vld1q_u32(lows + 8),
                             l3 = vld1q_u32(lows + 12);
            for (i = 0; i < 16; ++i) {
                const uint32x4_t h = vdupq_n_u32(lows[i] << 8); /* c1, c3 where lows has c0, c2 */
                vst1q_u32(quads + 16 * i, vorrq_u32(l0, h));
                vst1q_u32(quads + 16 * i + 4, vorrq_u32(l1, h));
                vst1q_u32(quads + 16 * i + 8, vorrq_u32(l2, h));
                vst1q_u32(quads + 16 * i + 12, vorrq_u32(l3, h));
            }
        }
        nupes_i2c_mve(in, out, g, w, scratch, 2, quads, e);
        return;
    }
#endif
    for (i = 0; i < 16; ++i) {
        pairs[i] = (uint32_t)(uint16_t)w->lut[i & 3] | ((uint32_t)(uint16_t)w->lut[i >> 2] << 16);
    }
    nupes_i2c_run(in, out, g, w, scratch, NUPES_I2C_P2, pairs);
}
