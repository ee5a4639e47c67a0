/*
 * nupes_mve.h - what the kernels' Helium paths (__ARM_FEATURE_MVE: Cortex-M55, -mcpu=cortex-m55) share:
 * docs/numerics.md's requantization on four int32 lanes at once, bit for bit nupes_requantize
 * (nupes_fixedpoint.h), and the dot product of one int8 weight row with four int8 windows. Other
 * cores never include <arm_mve.h>: this header is empty for them.
 */
#ifndef NUPES_MVE_H
#define NUPES_MVE_H

#if defined(__ARM_FEATURE_MVE)
#include <arm_mve.h>
#include <stdint.h>

/*
 * Per-lane requantization constants, from TFLite's (mult, shift), shift in -31..30:
 * left = max(shift, 0), right = min(shift, 0) (a right shift by -right).
 */
typedef struct {
    int32x4_t mult, left, right;
} nupes_mve_rq_t;

/* Lanes from four channels' (mult, shift) arrays; n < 4 lanes valid (the others: mult 0, shift 0). */
static inline nupes_mve_rq_t nupes_mve_rq_load(const int32_t *mult, const int32_t *shift, int32_t n)
{
    const mve_pred16_t p = vctp32q((uint32_t)n);
    const int32x4_t s = vldrwq_z_s32(shift, p);
    nupes_mve_rq_t q;
    q.mult = vldrwq_z_s32(mult, p);
    q.left = vmaxq_s32(s, vdupq_n_s32(0));
    q.right = vminq_s32(s, vdupq_n_s32(0));
    return q;
}

/* Every lane with one channel's (mult, shift). */
static inline nupes_mve_rq_t nupes_mve_rq_dup(int32_t mult, int32_t shift)
{
    nupes_mve_rq_t q;
    q.mult = vdupq_n_s32(mult);
    q.left = vdupq_n_s32(shift > 0 ? shift : 0);
    q.right = vdupq_n_s32(shift < 0 ? shift : 0);
    return q;
}

/*
 * MBQM(acc) per lane, exactly nupes_requantize (9 instructions for four outputs, with out_zp and
 * the clamp, instead of about 12 per output):
 *  - VSHL by left: x * 2^max(shift, 0) fits int32 (the code generator checks it), as the scalar
 *    (uint32_t)x << left;
 *  - VQRDMULH: sat((2 x m + 2^31) >> 32) = floor((x m + 2^30) / 2^31) = SaturatingRoundingDoublingHighMul,
 *    which saturates only at x = m = INT32_MIN (m >= 0 here);
 *  - RoundingDivideByPOT(r, e), e = -right in 0..31, rounds ties away from zero: VRSHL by -e rounds
 *    ties up, floor((r + 2^(e-1)) / 2^e), computed without overflow (Arm ARM: the rounding constant
 *    is added at full precision). For r < 0 and e >= 1, floor((r - 1 + 2^(e-1)) / 2^e) rounds up
 *    exactly when r mod 2^e >= 2^(e-1) + 1, TFLite's threshold (mask >> 1) + 1. The -1 is
 *    (r AND right) >> 31 (right < 0 has its sign bit set; e = 0: right = 0, no fix), added with
 *    VQADD: at r = INT32_MIN it stays INT32_MIN, and floor((INT32_MIN + 2^(e-1)) / 2^e) = INT32_MIN >> e,
 *    which is RDBPOT(INT32_MIN, e) too (its remainder is 0).
 */
static inline int32x4_t nupes_mve_requantize(int32x4_t acc, const nupes_mve_rq_t *q)
{
    const int32x4_t r = vqrdmulhq_s32(vshlq_s32(acc, q->left), q->mult);
    const int32x4_t fix = vshrq_n_s32(vandq_s32(r, q->right), 31);
    return vrshlq_s32(vqaddq_s32(r, fix), q->right);
}

/* (a0, a1, a2, a3) as the lanes of one vector. (Not vcreateq_s32: GCC 12's puts its two halves the
 * other way round.) */
static inline int32x4_t nupes_mve_lanes(int32_t a0, int32_t a1, int32_t a2, int32_t a3)
{
    int32x4_t v = vdupq_n_s32(a0);
    v = vsetq_lane_s32(a1, v, 1);
    v = vsetq_lane_s32(a2, v, 2);
    return vsetq_lane_s32(a3, v, 3);
}

/* The four sums of one row against four windows (c0, c0 + k, c0 + 2k, c0 + 3k), each started from
 * the row's folded bias, as the lanes of one vector. One tail-predicated low-overhead loop
 * (DLSTP.8 / LETP: the last k % 16 bytes are predicated by the loop itself, and no byte past a row
 * or window is read): per 16 bytes one VLDRB of the row, four VLDRB of the windows and four
 * VMLADAVA, 10 instructions for 64 MACs. (GCC's own loop kept its pointers on the stack: about
 * twice as many.) The sums wrap like the DSP path's; the true accumulator fits int32, so the order
 * of the additions does not matter. */
/* What the three dot loops below share: per 16 bytes the four windows' VLDRB (q3), each multiplied
 * into the weights in q0 by one VMLADAVA, then the loop's end; and their operands (the four sums in
 * even registers, the row in a low register as the widening loads need, the four window pointers). */
#define NUPES_MVE_WINDOWS4                      \
    "vldrb.8 q3, [%[p0]], #16\n\t"              \
    "vmladava.s8 %[a0], q3, q0\n\t"             \
    "vldrb.8 q3, [%[p1]], #16\n\t"              \
    "vmladava.s8 %[a1], q3, q0\n\t"             \
    "vldrb.8 q3, [%[p2]], #16\n\t"              \
    "vmladava.s8 %[a2], q3, q0\n\t"             \
    "vldrb.8 q3, [%[p3]], #16\n\t"              \
    "vmladava.s8 %[a3], q3, q0\n\t"             \
    "letp lr, 1b\n"
#define NUPES_MVE_DOT4_OUT                                                                               \
    [a0] "+Te"(a0), [a1] "+Te"(a1), [a2] "+Te"(a2), [a3] "+Te"(a3), [w] "+l"(row), [p0] "+r"(p0), \
        [p1] "+r"(p1), [p2] "+r"(p2), [p3] "+r"(p3)

static inline int32x4_t nupes_mve_dot4_s8(const int8_t *row, const int8_t *c0, int32_t k, int32_t bias)
{
    const int8_t *p0 = c0, *p1 = c0 + k, *p2 = p1 + k, *p3 = p2 + k;
    int32_t a0 = bias, a1 = bias, a2 = bias, a3 = bias;
    __asm__ volatile("dlstp.8 lr, %[k]\n"
                     "1:\n\t"
                     "vldrb.8 q0, [%[w]], #16\n\t"
                     NUPES_MVE_WINDOWS4
                     : NUPES_MVE_DOT4_OUT
                     : [k] "r"(k)
                     : "q0", "q3", "lr", "memory");
    return nupes_mve_lanes(a0, a1, a2, a3);
}

/*
 * A layer's signed table (2^bits int16 levels, lut[field]) as int8 levels times 2^E: E is the
 * largest shift every level is a multiple of, t8[f] = lut[f] >> E. Returns E, or -1 when some
 * lut[f] >> E is beyond int8 (int16 levels: the caller keeps its DSP loop). A 2-bit table,
 * {0, +-2^G}, is always 1 << G; quantize --levels int8 gives this form to the tables of the
 * convolutions whose Helium loops multiply int8 levels (codegen/plan.py, helium_table_kernel).
 */
static inline int32_t nupes_mve_lut8(const int16_t *lut, int32_t n, int8_t *t8)
{
    uint32_t any = 0;
    int32_t e = 0, f;
    for (f = 0; f < n; ++f) {
        any |= (uint32_t)(lut[f] < 0 ? -lut[f] : lut[f]);
    }
    if (any != 0) {
        e = (int32_t)__builtin_ctz(any);
    }
    for (f = 0; f < n; ++f) {
        const int32_t v = lut[f] >> e; /* exact: lut[f] is a multiple of 2^e */
        if (v > 127 || v < -128) {
            return -1;
        }
        t8[f] = (int8_t)v;
    }
    return e;
}

/* The four sums (from 0) of one row of 4-bit codes, each group of four codes stored (c0, c2, c1, c3)
 * (nupes_kernels.h: _p4 rows), against four int8 windows, the codes decoded to int8 levels in the
 * loop: per 16 codes one VLDRH.U32 (two bytes, four codes, per lane: c0 | c2 << 4 | c1 << 8 |
 * c3 << 12), VAND / VSHR / VAND / VSLI to the bytes (c0, c1, c2, c3), a VLDRB gather from the 16-byte
 * table t8 (indexed by the whole sign-magnitude field), then the four VLDRB + VMLADAVA of the s8
 * loop: 15 instructions for 64 MACs. k % 4 == 0, so DLSTP.8's tail predicate covers whole lanes of
 * the 32-bit steps and no byte past the row (k / 2 bytes) is read. */
static inline int32x4_t nupes_mve_dot4_p4(const uint8_t *row, const int8_t *c0, int32_t k, const int8_t *t8)
{
    const int8_t *p0 = c0, *p1 = c0 + k, *p2 = p1 + k, *p3 = p2 + k;
    int32_t a0 = 0, a1 = 0, a2 = 0, a3 = 0;
    __asm__ volatile("vmov.i8 q2, #15\n\t"
                     "dlstp.8 lr, %[k]\n"
                     "1:\n\t"
                     "vldrh.u32 q0, [%[w]], #8\n\t"
                     "vand q1, q0, q2\n\t"
                     "vshr.u32 q0, q0, #4\n\t"
                     "vand q0, q0, q2\n\t"
                     "vsli.32 q1, q0, #16\n\t"
                     "vldrb.u8 q0, [%[t], q1]\n\t"
                     NUPES_MVE_WINDOWS4
                     : NUPES_MVE_DOT4_OUT
                     : [k] "r"(k), [t] "r"(t8)
                     : "q0", "q1", "q2", "q3", "lr", "memory");
    return nupes_mve_lanes(a0, a1, a2, a3);
}

/* The same for 2-bit codes: one byte holds a group (c0, c2, c1, c3), and t32[byte] is its four int8
 * levels in order (c0, c1, c2, c3), so per 16 codes one VLDRB.U32 (four bytes) and one VLDRW gather
 * of four words: 11 instructions for 64 MACs. */
static inline int32x4_t nupes_mve_dot4_p2(const uint8_t *row, const int8_t *c0, int32_t k, const uint32_t *t32)
{
    const int8_t *p0 = c0, *p1 = c0 + k, *p2 = p1 + k, *p3 = p2 + k;
    int32_t a0 = 0, a1 = 0, a2 = 0, a3 = 0;
    __asm__ volatile("dlstp.8 lr, %[k]\n"
                     "1:\n\t"
                     "vldrb.u32 q1, [%[w]], #4\n\t"
                     "vldrw.u32 q0, [%[t], q1, uxtw #2]\n\t"
                     NUPES_MVE_WINDOWS4
                     : NUPES_MVE_DOT4_OUT
                     : [k] "r"(k), [t] "r"(t32)
                     : "q0", "q1", "q3", "lr", "memory");
    return nupes_mve_lanes(a0, a1, a2, a3);
}

/* out_zp + MBQM(acc), clamped to [lo, hi] (int8 values in int32 lanes). */
static inline int32x4_t nupes_mve_output(int32x4_t acc, const nupes_mve_rq_t *q, int32_t out_zp, int32_t lo, int32_t hi)
{
    const int32x4_t v = vaddq_n_s32(nupes_mve_requantize(acc, q), out_zp);
    return vminq_s32(vmaxq_s32(v, vdupq_n_s32(lo)), vdupq_n_s32(hi));
}
/* out_zp + MBQM(acc) clamped to [lo, hi] with one channel's (mult, shift) in every lane, as scalar
 * operands (VSHL, VQRDMULH and VRSHL by a register: no constant vectors to keep live): exactly
 * nupes_mve_output(acc, nupes_mve_rq_dup(mult, shift), ...) (for shift < 0 the fix-up (r AND
 * right) >> 31 is r >> 31, right's sign bit being set). */
static inline int32x4_t nupes_mve_output1(int32x4_t acc, int32_t mult, int32_t shift, int32_t out_zp, int32x4_t lo,
                                          int32x4_t hi)
{
    int32x4_t r;
    if (shift > 0) {
        acc = vshlq_r_s32(acc, shift);
    }
    r = vqrdmulhq_n_s32(acc, mult);
    if (shift < 0) {
        r = vrshlq_n_s32(vqaddq_s32(r, vshrq_n_s32(r, 31)), shift);
    }
    return vminq_s32(vmaxq_s32(vaddq_n_s32(r, out_zp), lo), hi);
}
#endif

#endif /* NUPES_MVE_H */
