#include <string.h>

#include "nupes_kernels.h"
#include "nupes_reduce.h"

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

/* n bytes of one value: the zero point between the pixels of a zero insertion (TRANSPOSE_CONV). */
void nupes_fill_s8(int8_t *dst, int32_t n, int32_t value)
{
    memset(dst, (int)(int8_t)value, (size_t)n);
}

/* TFLite Micro's int8 REDUCE_MAX (reduce_common.cc): the largest code of each output's values; input
 * and output share the scale, so no arithmetic. */
void nupes_reduce_max_s8(const int8_t *src, int8_t *dst, const nupes_reduce_t *r)
{
    const int32_t n = nupes_reduce_outputs(r);
    int32_t o;
    for (o = 0; o < n; ++o) {
        dst[o] = (int8_t)nupes_reduce_values(nupes_reduce_start(src, r, o), r, 1);
    }
}
