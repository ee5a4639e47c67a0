/*
 * nupes_svdf_carry.c - TFLite Micro's int8 SVDF (svdf_common.cc, EvalIntegerSvdfReference with an int16 or
 * int8 activation state) from a carried state (a "carry" model: the state persists from one inference to
 * the next, as TFLite Micro's variable tensor persists across Invoke() until reset), bit for bit; the
 * NumPy twin is nupes_edge/intref/svdf.py svdf_step.
 *
 * As TFLite Micro: the whole state (filters x memory values) moves one value to the left, each filter's
 * newest value becomes its requantized feature sum (zero point + the value limited to the state type's
 * range, stored in that type: an int8 state wraps), then each filter sums time weights x (state - zero
 * point) over its memory in int32 (validate.check_svdf bounds it for a carried state), the unit's rank
 * filters onto the bias. The state is held as int16 whatever its type (an int8 state's values fit).
 * p->w_time holds all filters x memory time weights here (nupes_svdf.c, from the reset state, keeps only
 * each filter's newest). A separate file, so nupes_svdf_s8 compiles as it did before this one existed.
 */
#include "nupes_dsp.h"
#include "nupes_fixedpoint.h"
#include "nupes_kernels.h"

void nupes_svdf_s8_carry(const int8_t *in, int8_t *out, const nupes_svdf_t *p, int32_t memory, int16_t *state)
{
    const int32_t n = p->inputs, span = p->state_hi - p->state_lo + 1, values = p->units * p->rank * memory;
    int32_t u, r, m, f = 0;
    for (m = 0; m + 1 < values; ++m) { /* the last value is overwritten below */
        state[m] = state[m + 1];
    }
    for (u = 0; u < p->units; ++u) {
        int32_t acc = p->bias[u], v;
        for (r = 0; r < p->rank; ++r, ++f) {
            int16_t *const sf = state + f * memory;
            const int16_t *const wt = p->w_time + f * memory;
            int32_t s = nupes_requantize(nupes_dot_s8(in, p->w_feature + f * n, n, p->feature_bias[f]), p->mult1,
                                         p->shift1);
            s = p->state_zp + (s < p->state_lo ? p->state_lo : (s > p->state_hi ? p->state_hi : s));
            sf[memory - 1] = (int16_t)(s > p->state_hi ? s - span : (s < p->state_lo ? s + span : s));
            for (m = 0; m < memory; ++m) {
                acc += (int32_t)wt[m] * ((int32_t)sf[m] - p->state_zp);
            }
        }
        v = nupes_requantize(acc, p->mult2, p->shift2) + p->out_zp;
        out[u] = (int8_t)(v < -128 ? -128 : (v > 127 ? 127 : v));
    }
}
