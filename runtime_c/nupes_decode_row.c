#include "nupes_dot.h"
#include "nupes_kernels.h"

/* Fields are LSB-first in a little-endian bit stream; b <= 8 so a field spans at most two
 * bytes (the packed array carries one guard byte so the second read never leaves it). */
void nupes_decode_row(const uint8_t *row, int32_t bits, const int16_t *lut, int32_t k, int32_t run, int16_t *dst)
{
    const uint32_t mag_mask = (1u << (bits - 1)) - 1u;
    const uint32_t sign_bit = 1u << (bits - 1);
    const uint32_t field_mask = (1u << bits) - 1u;
    uint32_t bitpos = 0;
    int32_t i;
#if NUPES_USE_DSP
    int32_t in_run = 0;
#endif
    (void)run;
    for (i = 0; i < k; ++i) {
        const uint32_t byte = bitpos >> 3;
        const uint32_t window = (uint32_t)row[byte] | ((uint32_t)row[byte + 1] << 8);
        const uint32_t field = (window >> (bitpos & 7u)) & field_mask;
        const int16_t level = lut[field & mag_mask];
        int32_t slot = i;
#if NUPES_USE_DSP
        /* (v0, v1, v2, v3) -> (v0, v2, v1, v3) inside each full group of four of a run */
        slot = i - in_run + nupes_run_slot(in_run, run);
        if (++in_run == run) {
            in_run = 0;
        }
#endif
        dst[slot] = (int16_t)((field & sign_bit) ? -level : level);
        bitpos += (uint32_t)bits;
    }
}
