#include "nupes_fixedpoint.h"
#include "nupes_kernels.h"

void nupes_add(const int8_t *in1, const int8_t *in2, int8_t *out, int32_t n, const nupes_add_params_t *p)
{
    int32_t i;
    for (i = 0; i < n; ++i) {
        const int32_t a = nupes_requantize(((int32_t)in1[i] - p->in1_zp) * (1 << p->left_shift), p->in1_mult, p->in1_shift);
        const int32_t b = nupes_requantize(((int32_t)in2[i] - p->in2_zp) * (1 << p->left_shift), p->in2_mult, p->in2_shift);
        const int32_t sum = nupes_requantize(a + b, p->out_mult, p->out_shift) + p->out_zp;
        out[i] = nupes_clamp_s8(sum, p->act_min, p->act_max);
    }
}
