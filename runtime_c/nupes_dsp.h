/*
 * nupes_dsp.h - selects the kernels' inner-loop path at compile time.
 *
 * NUPES_USE_DSP is 1 when the Cortex-M DSP extension is available (__ARM_FEATURE_DSP, e.g.
 * -mcpu=cortex-m4/m7/m33) and then the dot products use ACLE __SXTB16 / __SMLAD from
 * <arm_acle.h>. Define NUPES_DSP_EMULATE on a host to run that same DSP path with portable C
 * versions of the four intrinsics (this is how the host tests check the DSP path bit for bit).
 * Define NUPES_NO_DSP to force the portable path.
 */
#ifndef NUPES_DSP_H
#define NUPES_DSP_H

#include <stdint.h>
#include <string.h>

#if defined(NUPES_NO_DSP)
#define NUPES_USE_DSP 0
#elif defined(__ARM_FEATURE_DSP) && __ARM_FEATURE_DSP
#include <arm_acle.h>
#define NUPES_USE_DSP 1
#define nupes_sxtb16(x) ((int32_t)__sxtb16((int8x4_t)(x)))
/* GCC's arm_acle.h has no __ror; it folds this rotate into "sxtb16 rd, rm, ror #8" */
#define nupes_sxtb16_ror8(x) ((int32_t)__sxtb16((int8x4_t)((((uint32_t)(x)) >> 8) | (((uint32_t)(x)) << 24))))
#define nupes_ssub16(a, b) ((int32_t)__ssub16((int16x2_t)(a), (int16x2_t)(b)))
#define nupes_smlad(a, b, acc) ((int32_t)__smlad((int16x2_t)(a), (int16x2_t)(b), (acc)))
#elif defined(NUPES_DSP_EMULATE)
#define NUPES_USE_DSP 1
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
#else
#define NUPES_USE_DSP 0
#endif

#if NUPES_USE_DSP
static inline int32_t nupes_read32(const void *p)
{
    int32_t v;
    memcpy(&v, p, 4); /* one (possibly unaligned) LDR on Cortex-M4 */
    return v;
}
#endif

#endif /* NUPES_DSP_H */
