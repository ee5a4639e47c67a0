/* nupes_window.h - which kernel taps of a sliding window fall inside the input (zero padding). */
#ifndef NUPES_WINDOW_H
#define NUPES_WINDOW_H

#include <stdint.h>

/* Taps [*lo, *hi) of a k-tap window whose first tap sits at `origin` lie inside [0, size). */
static inline void nupes_window_taps(int32_t origin, int32_t k, int32_t size, int32_t *lo, int32_t *hi)
{
    *lo = origin < 0 ? -origin : 0;
    *hi = origin + k > size ? size - origin : k;
}

#endif /* NUPES_WINDOW_H */
