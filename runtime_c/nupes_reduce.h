/* The walk REDUCE_MAX and MEAN over any axes share (nupes_reduce_t in nupes_kernels.h): outputs in
 * order, each reducing the values its inner loops reach. Inlined into each kernel with `max` a
 * constant, so each gets its own inner loop. */
#ifndef NUPES_REDUCE_H
#define NUPES_REDUCE_H

#include "nupes_kernels.h"

static inline int32_t nupes_reduce_outputs(const nupes_reduce_t *r)
{
    const int32_t *n = r->outer_count;
    return n[0] * n[1] * n[2] * n[3] * n[4];
}

/* Output o's first value: o split into the outer loops' indices, the last one fastest. */
static inline const int8_t *nupes_reduce_start(const int8_t *src, const nupes_reduce_t *r, int32_t o)
{
    int32_t off = r->src_off, i;
    for (i = 4; i >= 0; --i) {
        off += (o % r->outer_count[i]) * r->outer_stride[i];
        o /= r->outer_count[i];
    }
    return src + off;
}

/* The largest code of the values from s (max), else their sum. */
static inline int32_t nupes_reduce_values(const int8_t *s, const nupes_reduce_t *r, int32_t max)
{
    const int32_t *k = r->inner_count, *is = r->inner_stride;
    int32_t acc = max ? -128 : 0, i0, i1, i2, i3, i4;
    for (i0 = 0; i0 < k[0]; ++i0)
        for (i1 = 0; i1 < k[1]; ++i1)
            for (i2 = 0; i2 < k[2]; ++i2)
                for (i3 = 0; i3 < k[3]; ++i3) {
                    const int8_t *t = s + i0 * is[0] + i1 * is[1] + i2 * is[2] + i3 * is[3];
                    for (i4 = 0; i4 < k[4]; ++i4) {
                        const int32_t v = t[i4 * is[4]];
                        acc = max ? (v > acc ? v : acc) : acc + v;
                    }
                }
    return acc;
}

#endif /* NUPES_REDUCE_H */
