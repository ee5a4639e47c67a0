/*
 * nupes_dsp.h - selects the kernels' inner-loop path at compile time.
 *
 * NUPES_USE_DSP is 1 when the Cortex-M DSP extension is available (__ARM_FEATURE_DSP, e.g.
 * -mcpu=cortex-m4/m7/m33) and then the kernels use the ACLE SIMD intrinsics from <arm_acle.h>
 * (SXTB16, SSUB16, SMLAD, SMLABB/SMLATT, SSUB8 + SEL, SSAT) plus two one-line inline-asm forms
 * GCC lacks (SXTB16 with ROR #8, SMMULR). Define NUPES_DSP_EMULATE on a host to run that same DSP
 * path with portable C versions of exactly the same lane semantics (this is how the host tests
 * check the DSP path bit for bit).
 * Define NUPES_NO_DSP to force the portable path.
 */
#ifndef NUPES_DSP_H
#define NUPES_DSP_H

/* Keeps a cold or register-hungry helper out of its caller (GCC and Clang; elsewhere a no-op):
 * inlined, it made the caller spill its accumulators, or grew flash for no speed. */
#if defined(__GNUC__)
#define NUPES_NOINLINE __attribute__((noinline))
#else
#define NUPES_NOINLINE
#endif

#include <stdint.h>
#include <string.h>

#if defined(NUPES_NO_DSP)
#define NUPES_USE_DSP 0
#elif defined(__ARM_FEATURE_DSP) && __ARM_FEATURE_DSP
#include <arm_acle.h>
#define NUPES_USE_DSP 1
#define nupes_sxtb16(x) ((int32_t)__sxtb16((int8x4_t)(x)))
/* GCC's arm_acle.h has no __ror, and GCC 12 does not fold a rotate into SXTB16's operand: one
 * instruction here instead of two in every inner loop. */
static inline int32_t nupes_sxtb16_ror8(int32_t x)
{
    int32_t r;
    __asm__("sxtb16 %0, %1, ror #8" : "=r"(r) : "r"(x));
    return r;
}
#define nupes_ssub16(a, b) ((int32_t)__ssub16((int16x2_t)(a), (int16x2_t)(b)))
#define nupes_smlad(a, b, acc) ((int32_t)__smlad((int16x2_t)(a), (int16x2_t)(b), (acc)))
/* acc + bottom(a) * bottom(b), acc + top(a) * top(b): one 16x16 product each (depthwise) */
#define nupes_smlabb(a, b, acc) ((int32_t)__smlabb((int32_t)(a), (int32_t)(b), (acc)))
#define nupes_smlatt(a, b, acc) ((int32_t)__smlatt((int32_t)(a), (int32_t)(b), (acc)))
/* Per-byte signed max / min of four int8 lanes: SSUB8 sets GE[i] where a[i] >= b[i], SEL then
 * takes a[i] where GE[i] is set, else b[i] (GCC tracks the GE flags from __ssub8 to __sel). */
static inline int32_t nupes_max_s8x4(int32_t a, int32_t b)
{
    (void)__ssub8((int8x4_t)a, (int8x4_t)b);
    return (int32_t)__sel((uint8x4_t)a, (uint8x4_t)b);
}
static inline int32_t nupes_min_s8x4(int32_t a, int32_t b)
{
    (void)__ssub8((int8x4_t)a, (int8x4_t)b);
    return (int32_t)__sel((uint8x4_t)b, (uint8x4_t)a);
}
/* round(a * b / 2^32), ties up: (a * b + 2^31) >> 32 (GCC's arm_acle.h has no SMMULR) */
static inline int32_t nupes_smmulr(int32_t a, int32_t b)
{
    int32_t r;
    __asm__("smmulr %0, %1, %2" : "=r"(r) : "r"(a), "r"(b));
    return r;
}
/* x saturated to [-128, 127] */
#define nupes_ssat8(x) ((int32_t)__ssat((int32_t)(x), 8))
#define NUPES_HW_DSP 1
#elif defined(NUPES_DSP_EMULATE)
#define NUPES_USE_DSP 1
#else
#define NUPES_USE_DSP 0
#endif

#ifndef NUPES_HW_DSP
#define NUPES_HW_DSP 0
#endif

/* Kernels whose device loops are whole Thumb-2 assembly (nupes_conv2d_window.c,
 * nupes_conv2d_im2col.c, nupes_fc_job.h): the real DSP instructions and GNU inline asm. Elsewhere
 * (hosts, emulated or portable) they run their C definitions. */
#if NUPES_HW_DSP && defined(__GNUC__) && defined(__thumb2__)
#define NUPES_ASM 1
#else
#define NUPES_ASM 0
#endif

#if !NUPES_HW_DSP
/* Portable definitions with the exact lane semantics of the ARM instructions: the DSP path on a
 * host (NUPES_DSP_EMULATE), and the C definitions of the kernels whose device loops are Thumb-2
 * assembly (nupes_conv2d_im2col.c, nupes_fc_job.h), portable builds included. */
/* Portable definitions with the exact lane semantics of the ARM instructions. */
static inline int32_t nupes_pack16(int32_t lo, int32_t hi)
{
    return (int32_t)(((uint32_t)(uint16_t)lo) | ((uint32_t)(uint16_t)hi << 16));
}
static inline int32_t nupes_lo16(int32_t x) { return (int16_t)((uint32_t)x & 0xFFFFu); }
static inline int32_t nupes_hi16(int32_t x) { return (int16_t)((uint32_t)x >> 16); }
static inline int32_t nupes_sxtb16(int32_t x)
{
    uint32_t u = (uint32_t)x;
    return nupes_pack16((int8_t)(u & 0xFFu), (int8_t)((u >> 16) & 0xFFu));
}
static inline int32_t nupes_sxtb16_ror8(int32_t x)
{
    uint32_t u = (uint32_t)x;
    return nupes_sxtb16((int32_t)((u >> 8) | (u << 24)));
}
static inline int32_t nupes_ssub16(int32_t a, int32_t b)
{
    return nupes_pack16(nupes_lo16(a) - nupes_lo16(b), nupes_hi16(a) - nupes_hi16(b));
}
static inline int32_t nupes_smlad(int32_t a, int32_t b, int32_t acc)
{
    /* wraps like the instruction; the no-overflow proof makes wrapping unreachable */
    return (int32_t)((uint32_t)acc + (uint32_t)(nupes_lo16(a) * nupes_lo16(b)) + (uint32_t)(nupes_hi16(a) * nupes_hi16(b)));
}
static inline int32_t nupes_smlabb(int32_t a, int32_t b, int32_t acc)
{
    return (int32_t)((uint32_t)acc + (uint32_t)(nupes_lo16(a) * nupes_lo16(b)));
}
static inline int32_t nupes_smlatt(int32_t a, int32_t b, int32_t acc)
{
    return (int32_t)((uint32_t)acc + (uint32_t)(nupes_hi16(a) * nupes_hi16(b)));
}
/* SSUB8's GE flags: bit i set where signed byte i of a >= byte i of b (a[i] - b[i] >= 0). */
static inline uint32_t nupes_ssub8_ge(int32_t a, int32_t b)
{
    uint32_t ge = 0;
    int32_t i;
    for (i = 0; i < 4; ++i) {
        const int32_t ai = (int8_t)(((uint32_t)a >> (8 * i)) & 0xFFu);
        const int32_t bi = (int8_t)(((uint32_t)b >> (8 * i)) & 0xFFu);
        ge |= (ai - bi >= 0 ? 1u : 0u) << i;
    }
    return ge;
}
/* SEL: byte i from a where GE bit i is set, else from b. */
static inline int32_t nupes_sel_ge(int32_t a, int32_t b, uint32_t ge)
{
    uint32_t r = 0;
    int32_t i;
    for (i = 0; i < 4; ++i) {
        r |= (((ge >> i) & 1u) ? (uint32_t)a : (uint32_t)b) & (0xFFu << (8 * i));
    }
    return (int32_t)r;
}
static inline int32_t nupes_max_s8x4(int32_t a, int32_t b) { return nupes_sel_ge(a, b, nupes_ssub8_ge(a, b)); }
static inline int32_t nupes_min_s8x4(int32_t a, int32_t b) { return nupes_sel_ge(b, a, nupes_ssub8_ge(a, b)); }
static inline int32_t nupes_smmulr(int32_t a, int32_t b)
{
    return (int32_t)(((int64_t)a * (int64_t)b + ((int64_t)1 << 31)) >> 32); /* arithmetic shift: floor */
}
static inline int32_t nupes_ssat8(int32_t x) { return x < -128 ? -128 : (x > 127 ? 127 : x); }
/* bytes 0..3 as a little-endian word, whatever the host (one load on x86) */
static inline int32_t nupes_read32(const void *p)
{
    const uint8_t *b = (const uint8_t *)p;
    return (int32_t)((uint32_t)b[0] | ((uint32_t)b[1] << 8) | ((uint32_t)b[2] << 16) | ((uint32_t)b[3] << 24));
}
#else
static inline int32_t nupes_read32(const void *p)
{
    int32_t v;
    memcpy(&v, p, 4); /* one (possibly unaligned) LDR on Cortex-M4 */
    return v;
}
#endif

/* acc + the int8 dot product of x and w over n values: SMLAD on four bytes at a time where the core has
 * it (the LSTM's gates, the SVDF's filters) */
static inline int32_t nupes_dot_s8(const int8_t *x, const int8_t *w, int32_t n, int32_t acc)
{
    int32_t j = 0;
#if NUPES_USE_DSP
    for (; j + 4 <= n; j += 4) {
        const int32_t x4 = nupes_read32(x + j), w4 = nupes_read32(w + j);
        acc = nupes_smlad(nupes_sxtb16(x4), nupes_sxtb16(w4), acc);
        acc = nupes_smlad(nupes_sxtb16_ror8(x4), nupes_sxtb16_ror8(w4), acc);
    }
#endif
    for (; j < n; ++j) {
        acc += (int32_t)x[j] * (int32_t)w[j];
    }
    return acc;
}

#endif /* NUPES_DSP_H */
