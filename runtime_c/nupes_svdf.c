/*
 * nupes_svdf.c - TFLite Micro's int8 SVDF (svdf_common.cc, EvalIntegerSvdfReference with an int16 or
 * int8 activation state) for one inference from the reset state, bit for bit; the NumPy twin is
 * nupes_edge/intref/svdf.py.
 *
 * TFLite Micro shifts the state one step, writes each filter's requantized feature sum as its newest
 * value, and sums time weights x (state - zero point) over the filter's memory. From the reset state
 * every older value is the zero point, so that sum is the newest time weight x (newest value - zero
 * point): the same int32 value, with no state kept. The newest value is stored in the state's type as
 * TFLite Micro stores it (zero point + the value limited to the type's range; an int8 state wraps).
 * The input zero point is folded into one constant per filter (sum w * (x - zp) = sum w * x - zp *
 * sum w, exact in int32: codegen checks the bound).
 */
#include "nupes_dsp.h"
#include "nupes_fixedpoint.h"
#include "nupes_kernels.h"

void nupes_svdf_s8(const int8_t *in, int8_t *out, const nupes_svdf_t *p)
{
    const int32_t n = p->inputs, span = p->state_hi - p->state_lo + 1;
    int32_t u, r, f = 0;
    for (u = 0; u < p->units; ++u) {
        int32_t acc = p->bias[u], v;
        for (r = 0; r < p->rank; ++r, ++f) {
            int32_t s = nupes_requantize(nupes_dot_s8(in, p->w_feature + f * n, n, p->feature_bias[f]), p->mult1,
                                         p->shift1);
            s = p->state_zp + (s < p->state_lo ? p->state_lo : (s > p->state_hi ? p->state_hi : s));
            s = s > p->state_hi ? s - span : (s < p->state_lo ? s + span : s); /* stored in the state's type */
            acc += (int32_t)p->w_time[f] * (s - p->state_zp);
        }
        v = nupes_requantize(acc, p->mult2, p->shift2) + p->out_zp;
        out[u] = (int8_t)(v < -128 ? -128 : (v > 127 ? 127 : v));
    }
}
