/*
 * nupes_lstm.c - TFLite Micro's int8 UNIDIRECTIONAL_SEQUENCE_LSTM (lstm_eval.h, LstmStep with int8
 * activations and weights, int16 gates and cell state), bit for bit; the NumPy twin is
 * nupes_edge/intref/lstm.py.
 *
 * Per step t and gate g: two int8 dot products per unit (the step's input, the previous hidden
 * state), each requantized to int16 on a 2^-12 grid and added with saturation, then the gate's
 * int16 sigmoid (or tanh) through one 256-entry table. The zero points are folded into the
 * biases at build time (sum w * (x - zp) = sum w * x - zp * sum w, exact in int32). The cell state
 * and the four gate rows live in the scratch; the hidden state is the previous output row, and at
 * t = 0 it is the reset state (the zero point), whose recurrent sums are 0.
 */
#include "nupes_dsp.h"
#include "nupes_fixedpoint.h"
#include "nupes_kernels.h"

#include "nupes_lstm_gates.h"

void nupes_lstm_s8(const int8_t *in, int8_t *out, const nupes_lstm_t *p, int16_t *scratch)
{
    const int32_t f = p->features, s = p->units;
    int16_t *const cell = scratch, *const gates = scratch + s; /* gates: 4 rows of s */
    int32_t t, g, u;
    for (u = 0; u < s; ++u) {
        cell[u] = 0;
    }
    for (t = 0; t < p->steps; ++t) {
        const int8_t *x = in + t * f, *h = out + (t - 1) * s;
        int8_t *o = out + t * s;
        for (g = 0; g < 4; ++g) {
            int16_t *row = gates + g * s;
            const int8_t *wi = p->w_in + g * s * f, *wr = p->w_rec + g * s * s;
            const int32_t *bi = p->in_bias + g * s, *br = p->rec_bias + g * s;
            for (u = 0; u < s; ++u) {
                int32_t v = nupes_sat16(nupes_requantize(nupes_dot_s8(x, wi + u * f, f, bi[u]), p->fc_mult[g],
                                                         p->fc_shift[g]));
                if (t > 0) {
                    v = nupes_sat16(v + nupes_sat16(nupes_requantize(nupes_dot_s8(h, wr + u * s, s, br[u]),
                                                                     p->fc_mult[4 + g], p->fc_shift[4 + g])));
                }
                row[u] = g == 2 && p->cell_tanh ? nupes_tanh_s16(v, 3, 0) : nupes_sigmoid_q12(v);
            }
        }
        for (u = 0; u < s; ++u) {
            const int32_t gi = gates[u], gf = gates[s + u], gc = gates[2 * s + u], go = gates[3 * s + u];
            int32_t c = nupes_sat16(nupes_requantize(gf * cell[u], p->cell_mult, p->cell_shift));
            c = nupes_sat16(c + nupes_sat16(nupes_requantize(gi * gc, p->gate_mult, p->gate_shift)));
            if (p->cell_clip > 0) {
                c = c > p->cell_clip ? p->cell_clip : (c < -p->cell_clip ? -p->cell_clip : c);
            }
            cell[u] = (int16_t)c;
            {
                const int32_t th = nupes_tanh_s16(c, p->tanh_mult, p->tanh_shift);
                const int32_t hv = nupes_requantize(th * go, p->hid_mult, p->hid_shift) + p->hid_zp;
                o[u] = (int8_t)(hv < -128 ? -128 : (hv > 127 ? 127 : hv));
            }
        }
    }
}
