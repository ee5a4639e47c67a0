#include "nupes_dot.h"
#include "nupes_kernels.h"

/* Fields are LSB-first in a little-endian bit stream, b <= 8 bits each. A 32-bit bit buffer is
 * refilled a byte at a time, so a row never reads past its own ceil(k*b/8) bytes. */
typedef struct {
    const uint8_t *p;
    uint32_t buf;
    int32_t have;
} nupes_bitreader_t;

static inline uint32_t nupes_next_field(nupes_bitreader_t *r, int32_t bits, uint32_t mask)
{
    uint32_t v;
    if (r->have < bits) {
        r->buf |= (uint32_t)(*r->p++) << r->have;
        r->have += 8;
    }
    v = r->buf & mask;
    r->buf >>= bits;
    r->have -= bits;
    return v;
}

/* About 7 instructions per level: refill test, mask, shift, one signed table load, one store. */
void nupes_decode_row(const uint8_t *row, int32_t bits, const int16_t *lut, int32_t k, int32_t run, int16_t *dst)
{
    const uint32_t mask = (1u << bits) - 1u;
    nupes_bitreader_t r;
    int32_t i = 0;
    r.p = row;
    r.buf = 0;
    r.have = 0;
#if NUPES_USE_DSP
    /* (v0, v1, v2, v3) -> (v0, v2, v1, v3) inside each full group of four of a run */
    while (i < k) {
        const int32_t run_end = i + run < k ? i + run : k;
        for (; i + 4 <= run_end; i += 4) {
            const uint32_t c0 = nupes_next_field(&r, bits, mask);
            const uint32_t c1 = nupes_next_field(&r, bits, mask);
            const uint32_t c2 = nupes_next_field(&r, bits, mask);
            const uint32_t c3 = nupes_next_field(&r, bits, mask);
            dst[i] = lut[c0];
            dst[i + 1] = lut[c2];
            dst[i + 2] = lut[c1];
            dst[i + 3] = lut[c3];
        }
        for (; i < run_end; ++i) {
            dst[i] = lut[nupes_next_field(&r, bits, mask)];
        }
    }
#else
    (void)run;
#endif
    for (; i < k; ++i) {
        dst[i] = lut[nupes_next_field(&r, bits, mask)];
    }
}
