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

/* sigmoid(i / 24) in 0.16 format, less half the chord's error at each interval's midpoint; the last
 * entry is the largest uint16. Made by nupes_edge/intref/lstm.py sigmoid_table() (tests/test_lstm.py
 * checks that this copy equals it). */
static const uint16_t nupes_sigmoid_q16[256] = {
    32768, 33451, 34133, 34813, 35493, 36169, 36843, 37513, 38180, 38841, 39498, 40149,
    40794, 41432, 42064, 42688, 43304, 43912, 44511, 45102, 45683, 46255, 46817, 47369,
    47911, 48443, 48964, 49475, 49975, 50464, 50942, 51409, 51865, 52311, 52745, 53169,
    53581, 53983, 54374, 54755, 55125, 55485, 55834, 56174, 56503, 56823, 57133, 57433,
    57724, 58007, 58280, 58544, 58800, 59048, 59288, 59519, 59743, 59959, 60168, 60370,
    60565, 60753, 60935, 61110, 61279, 61441, 61599, 61750, 61896, 62036, 62172, 62302,
    62428, 62549, 62666, 62778, 62886, 62990, 63090, 63186, 63279, 63368, 63454, 63536,
    63615, 63691, 63765, 63835, 63903, 63968, 64030, 64090, 64148, 64204, 64257, 64308,
    64357, 64405, 64450, 64494, 64536, 64576, 64614, 64652, 64687, 64721, 64754, 64786,
    64816, 64845, 64873, 64900, 64926, 64950, 64974, 64997, 65019, 65039, 65060, 65079,
    65097, 65115, 65132, 65149, 65164, 65179, 65194, 65208, 65221, 65234, 65246, 65258,
    65269, 65280, 65291, 65301, 65310, 65319, 65328, 65337, 65345, 65352, 65360, 65367,
    65374, 65381, 65387, 65393, 65399, 65404, 65410, 65415, 65420, 65425, 65429, 65433,
    65438, 65442, 65445, 65449, 65453, 65456, 65459, 65462, 65465, 65468, 65471, 65474,
    65476, 65479, 65481, 65483, 65485, 65488, 65489, 65491, 65493, 65495, 65497, 65498,
    65500, 65501, 65503, 65504, 65505, 65507, 65508, 65509, 65510, 65511, 65512, 65513,
    65514, 65515, 65516, 65517, 65517, 65518, 65519, 65520, 65520, 65521, 65522, 65522,
    65523, 65523, 65524, 65524, 65525, 65525, 65526, 65526, 65526, 65527, 65527, 65528,
    65528, 65528, 65529, 65529, 65529, 65529, 65530, 65530, 65530, 65530, 65531, 65531,
    65531, 65531, 65531, 65532, 65532, 65532, 65532, 65532, 65532, 65533, 65533, 65533,
    65533, 65533, 65533, 65533, 65533, 65534, 65534, 65534, 65534, 65534, 65534, 65534,
    65534, 65534, 65534, 65535,
};

static int32_t nupes_sat16(int32_t v) { return v < -32768 ? -32768 : (v > 32767 ? 32767 : v); }

/* reference_integer_ops::Logistic on int16 (multiplier 0, shift 0: a Q3.12 input), to Q0.15. */
static int16_t nupes_sigmoid_q12(int32_t x)
{
    const int32_t v = x * 3;
    const uint32_t a = (uint32_t)(v < 0 ? -v : v), uh = a >> 9;
    uint32_t r;
    if (uh >= 255) {
        r = 0x7FFFu << 10;
    } else {
        const uint32_t ua = nupes_sigmoid_q16[uh], ub = nupes_sigmoid_q16[uh + 1];
        r = (ua << 9) + (a & 0x1FFu) * (ub - ua);
    }
    r = v >= 0 ? r + (1u << 9) : (1u << 25) - r + (1u << 9) - 1u;
    return (int16_t)(r >> 10);
}

/* reference_integer_ops::Tanh on int16: (x * mult + round) >> shift, then the same table at twice
 * the slope, to Q0.15. */
static int16_t nupes_tanh_s16(int32_t x, int32_t mult, int32_t shift)
{
    const int32_t v = (x * mult + (shift > 0 ? 1 << (shift - 1) : 0)) >> shift;
    const uint32_t a = (uint32_t)(v < 0 ? -v : v), uh = a >> 8;
    int32_t r;
    if (uh >= 255) {
        r = 0xFFFF << 8;
    } else {
        const uint32_t ua = nupes_sigmoid_q16[uh], ub = nupes_sigmoid_q16[uh + 1];
        r = (int32_t)((ua << 8) + (a & 0xFFu) * (ub - ua));
    }
    r = v >= 0 ? r - (1 << 23) + (1 << 7) : -r + (1 << 23) + (1 << 7) - 1;
    return (int16_t)(r >> 8);
}

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
