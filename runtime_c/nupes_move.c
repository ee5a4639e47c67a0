#include <string.h>

#include "nupes_kernels.h"

/* Byte moves (nupes_edge/moves.py): TRANSPOSE, STRIDED_SLICE, PACK, UNPACK, SPLIT and CONCATENATION
 * along any axis are each one or more moves, five nested loops over element strides. The
 * innermost run is a memcpy where both sides are contiguous (a slice or a concatenation of rows). */
void nupes_copy_s8(const int8_t *src, int8_t *dst, const nupes_move_t *m)
{
    const int32_t *n = m->count, *ss = m->src_stride, *ds = m->dst_stride;
    const int contiguous = ss[4] == 1 && ds[4] == 1;
    int32_t a, b, c, d, e;
    for (a = 0; a < n[0]; ++a) {
        for (b = 0; b < n[1]; ++b) {
            for (c = 0; c < n[2]; ++c) {
                for (d = 0; d < n[3]; ++d) {
                    const int8_t *s = src + m->src_off + a * ss[0] + b * ss[1] + c * ss[2] + d * ss[3];
                    int8_t *o = dst + m->dst_off + a * ds[0] + b * ds[1] + c * ds[2] + d * ds[3];
                    if (contiguous) {
                        memcpy(o, s, (size_t)n[4]);
                    } else {
                        for (e = 0; e < n[4]; ++e) {
                            o[e * ds[4]] = s[e * ss[4]];
                        }
                    }
                }
            }
        }
    }
}

/* TFLite Micro's int8 REDUCE_MAX (reduce_common.cc): the largest code of each output's values; input
 * and output share the scale, so no arithmetic. Outputs are written in order (outer loops); the
 * values reduced into one are the inner loops. */
void nupes_reduce_max_s8(const int8_t *src, int8_t *dst, const nupes_reduce_t *r)
{
    const int32_t *n = r->outer_count, *os = r->outer_stride, *k = r->inner_count, *is = r->inner_stride;
    int32_t a, b, c, d, e, i0, i1, i2, i3, i4;
    for (a = 0; a < n[0]; ++a)
        for (b = 0; b < n[1]; ++b)
            for (c = 0; c < n[2]; ++c)
                for (d = 0; d < n[3]; ++d)
                    for (e = 0; e < n[4]; ++e) {
                        const int8_t *s = src + r->src_off + a * os[0] + b * os[1] + c * os[2] + d * os[3] + e * os[4];
                        int32_t best = -128;
                        for (i0 = 0; i0 < k[0]; ++i0)
                            for (i1 = 0; i1 < k[1]; ++i1)
                                for (i2 = 0; i2 < k[2]; ++i2)
                                    for (i3 = 0; i3 < k[3]; ++i3) {
                                        const int8_t *t = s + i0 * is[0] + i1 * is[1] + i2 * is[2] + i3 * is[3];
                                        for (i4 = 0; i4 < k[4]; ++i4) {
                                            const int32_t v = t[i4 * is[4]];
                                            best = v > best ? v : best;
                                        }
                                    }
                        *dst++ = (int8_t)best;
                    }
}
