#include "nupes_dot.h"
#include "nupes_kernels.h"

/* Fields are LSB-first in a little-endian bit stream, b <= 8 bits each; a row never reads past
 * its own ceil(k*b/8) bytes (the packed array's guard byte is not needed, only kept). */

/* Stores the four levels of codes c0..c3 at dst in the order the dot products read them: the DSP
 * path keeps (v0, v2, v1, v3), the order in which SXTB16 unpacks four int8 inputs. */
static inline void nupes_store4(int16_t *dst, const int16_t *lut, uint32_t c0, uint32_t c1, uint32_t c2, uint32_t c3)
{
    dst[0] = lut[c0];
#if NUPES_USE_DSP
    dst[1] = lut[c2];
    dst[2] = lut[c1];
#else
    dst[1] = lut[c1];
    dst[2] = lut[c2];
#endif
    dst[3] = lut[c3];
}

/*
 * bits is a constant after inlining (2..6: four codes fit the 32-bit buffer's refill; 8: whole
 * bytes; 7 and any other value: one code at a time). Groups of four restart at each run start
 * (see nupes_dot.h); the tail of a run is stored in plain order. For 2..6 and 8 bits one refill
 * test serves four codes; 7 bits refills per code.
 */
static inline void nupes_decode_fixed(const uint8_t *p, const int32_t bits, const int16_t *lut, int32_t k, int32_t run,
                                      int16_t *dst)
{
    const uint32_t mask = (1u << bits) - 1u;
    uint32_t buf = 0;
    int32_t have = 0, i = 0;
    while (i < k) {
        const int32_t run_end = i + run < k ? i + run : k;
        for (; i + 4 <= run_end; i += 4) {
            uint32_t c;
            if (bits == 8) {
                c = (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
                p += 4;
                nupes_store4(dst + i, lut, c & 255u, (c >> 8) & 255u, (c >> 16) & 255u, c >> 24);
                continue;
            }
            if (bits <= 6) {
                while (have < 4 * bits) {
                    buf |= (uint32_t)(*p++) << have;
                    have += 8;
                }
                c = buf;
                buf >>= 4 * bits;
                have -= 4 * bits;
                nupes_store4(dst + i, lut, c & mask, (c >> bits) & mask, (c >> (2 * bits)) & mask, (c >> (3 * bits)) & mask);
                continue;
            }
            {
                uint32_t cs[4];
                int32_t n;
                for (n = 0; n < 4; ++n) {
                    if (have < bits) {
                        buf |= (uint32_t)(*p++) << have;
                        have += 8;
                    }
                    cs[n] = buf & mask;
                    buf >>= bits;
                    have -= bits;
                }
                nupes_store4(dst + i, lut, cs[0], cs[1], cs[2], cs[3]);
            }
        }
        for (; i < run_end; ++i) {
            if (have < bits) {
                buf |= (uint32_t)(*p++) << have;
                have += 8;
            }
            dst[i] = lut[buf & mask];
            buf >>= bits;
            have -= bits;
        }
    }
}

/* 8-bit codes with an identity table (lut == NULL): the row holds int8 levels. */
static void nupes_decode_s8(const int8_t *p, int32_t k, int32_t run, int16_t *dst)
{
    int32_t i = 0;
    while (i < k) {
        const int32_t run_end = i + run < k ? i + run : k;
        for (; i + 4 <= run_end; i += 4, p += 4) {
            dst[i] = p[0];
#if NUPES_USE_DSP
            dst[i + 1] = p[2];
            dst[i + 2] = p[1];
#else
            dst[i + 1] = p[1];
            dst[i + 2] = p[2];
#endif
            dst[i + 3] = p[3];
        }
        for (; i < run_end; ++i) {
            dst[i] = *p++;
        }
    }
}

void nupes_decode_row(const uint8_t *row, int32_t bits, const int16_t *lut, int32_t k, int32_t run, int16_t *dst)
{
#if !NUPES_USE_DSP
    run = k; /* plain order: one run */
#endif
    if (run < 1) {
        run = 1;
    }
    if (lut == 0) {
        nupes_decode_s8((const int8_t *)row, k, run, dst);
        return;
    }
    /* one copy for each of the common widths, so shifts and masks are immediates; one generic copy
     * for the rest (every copy costs ~250 bytes of flash) */
    switch (bits) {
    case 2: nupes_decode_fixed(row, 2, lut, k, run, dst); break;
    case 4: nupes_decode_fixed(row, 4, lut, k, run, dst); break;
    case 8: nupes_decode_fixed(row, 8, lut, k, run, dst); break;
    default: nupes_decode_fixed(row, bits, lut, k, run, dst); break;
    }
}
