"""TFLite Micro's int8 UNIDIRECTIONAL_SEQUENCE_LSTM (kernels/lstm_eval.h, the 8x8->16 step), exactly.

Per time step and gate (input, forget, cell, output): an int8 fully connected layer of the step's input
and one of the previous hidden state, each requantized to int16 on a 2^-12 grid, summed with int16
saturation, then sigmoid (or, for the cell gate, the file's activation) on that grid to a 2^-15 output.
The int16 cell state becomes forget x cell + input x cell_gate (two int16 multiplies, a saturating
add, the optional clip), and the new int8 hidden state is tanh(cell) x output, requantized.

The int16 sigmoid and tanh are TFLite's (reference_integer_ops::Logistic / Tanh, int16): one table of
sigmoid(i / 24) in 0.16 format, linearly interpolated. The table is made here from its definition: each
entry is the value less half of the interpolation error at the midpoint of its interval (so that a
chord's error is spread over both ends), rounded, and the last entry is the largest uint16.
"""
from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

from .fixedpoint import multiply_by_quantized_multiplier, quantize_multiplier

GATES = ("input", "forget", "cell", "output")
GATE_INPUT_SCALE = 2.0 ** -12  # the gates' int16 inputs: Q3.12
GATE_OUTPUT_SCALE = 2.0 ** -15  # the gates' int16 outputs: Q0.15
INT16_MIN, INT16_MAX = -(1 << 15), (1 << 15) - 1


@lru_cache(maxsize=1)
def sigmoid_table() -> tuple[int, ...]:
    """256 uint16 entries: sigmoid(i / 24) · 2^16, less half the chord's error at the interval's midpoint."""
    def s(x: float) -> float:
        return 65536.0 / (1.0 + math.exp(-x))

    out = []
    for i in range(255):
        v, v_next, v_mid = s(i / 24), s((i + 1) / 24), s((i + 0.5) / 24)
        err = (v + v_next) / 2 - v_mid
        out.append(min(65535, math.floor(v - err / 2 + 0.5)))
    out.append(65535)
    return tuple(out)


@lru_cache(maxsize=1)
def _table() -> np.ndarray:
    return np.asarray(sigmoid_table(), np.int64)


def sigmoid_int16(x: np.ndarray) -> np.ndarray:
    """reference_integer_ops::Logistic on int16 with input multiplier 0 and shift 0 (a Q3.12 input):
    the input times 3, 9 fractional bits interpolated, to Q0.15."""
    t = _table()
    v = np.asarray(x, np.int64) * 3
    a = np.abs(v)
    uh = a >> 9
    idx = np.minimum(uh, 254)
    ua, ub = t[idx], t[idx + 1]
    res = np.where(uh >= 255, 0x7FFF << 10, (ua << 9) + (a & 0x1FF) * (ub - ua))
    res = np.where(v >= 0, res + (1 << 9), (1 << 25) - res + (1 << 9) - 1)
    return res >> 10


def tanh_params(scale_power: int) -> tuple[int, int]:
    """lstm_eval.cc's Tanh(cell_state_scale_power): the (input multiplier, left shift) TFLite's int16
    Tanh is called with, as that Tanh turns them into a multiplier and a rounding right shift."""
    shift = 15 + scale_power - 3
    mult = 0
    if shift < 0:
        shift, mult = -shift, 3
    if mult == 0:  # "power of two case"
        mult, shift = 3 << shift, 0
    return mult, shift


def tanh_int16(x: np.ndarray, mult: int, shift: int) -> np.ndarray:
    """reference_integer_ops::Tanh on int16 with (mult, shift) from tanh_params: Q0.15 output."""
    t = _table()
    rnd = 1 << (shift - 1) if shift > 0 else 0
    v = (np.asarray(x, np.int64) * mult + rnd) >> shift
    a = np.abs(v)
    uh = a >> 8
    idx = np.minimum(uh, 254)
    ua, ub = t[idx], t[idx + 1]
    res = np.where(uh >= 255, 0xFFFF << 8, (ua << 8) + (a & 0xFF) * (ub - ua))
    res = np.where(v >= 0, res - (1 << 23) + (1 << 7), -res + (1 << 23) + (1 << 7) - 1)
    return res >> 8


def cell_scale_power(scale: float) -> int:
    """CheckedLog2: log2 of the cell state's scale, in float32, rounded half away from zero."""
    x = np.float32(math.log(np.float32(scale))) * np.float32(1.0 / math.log(2.0))
    return int(math.copysign(math.floor(abs(float(x)) + 0.5), float(x)))


def quantized_clip(cell_clip: float, cell_scale: float) -> int:
    """The int16 cell clip: clip / scale in double, limited to int16, truncated (0: no clip)."""
    if not cell_clip > 0:
        return 0
    return int(min(max(float(np.float32(cell_clip)) / float(np.float32(cell_scale)), -32768.0), 32767.0))


def fc_multiplier(s_in: float, s_w: float) -> tuple[int, int]:
    """A gate's FC multiplier as TFLite Micro computes it: the float32 product of the scales, in double,
    over the 2^-12 output scale."""
    return quantize_multiplier(float(np.float32(s_in) * np.float32(s_w)) / GATE_INPUT_SCALE)


def mul_multiplier(s1: float, s2: float, s_out: float) -> tuple[int, int]:
    """CreateInterGateMulParams: the scales in double, their product over the output's."""
    return quantize_multiplier(float(np.float32(s1)) * float(np.float32(s2)) / float(np.float32(s_out)))


def _sat16(v: np.ndarray) -> np.ndarray:
    return np.clip(v, INT16_MIN, INT16_MAX)


def _fc16(x: np.ndarray, zp: int, w: np.ndarray, bias, mult: int, shift: int) -> np.ndarray:
    """An int8 fully connected layer to int16 (reference_integer_ops::FullyConnected, no activation):
    x (N, K), w (S, K) -> (N, S)."""
    acc = (x.astype(np.int64) - zp) @ w.astype(np.int64).T
    if bias is not None:
        acc = acc + bias.astype(np.int64)
    return _sat16(multiply_by_quantized_multiplier(acc, mult, shift))


def reset_state(p, n: int) -> tuple[np.ndarray, np.ndarray]:
    """TFLite Micro's reset state for n sequences: (hidden = its zero point, cell = 0), each (n, S)."""
    s = p.w_rec.shape[1]
    return np.full((n, s), int(p.hid_zp), np.int64), np.zeros((n, s), np.int64)


def lstm(x: np.ndarray, p) -> np.ndarray:
    """Run the LSTM on int8 sequences x (N, T, F) from TFLite Micro's reset state (hidden = its zero
    point, cell = 0); returns the int8 hidden states (N, T, S)."""
    return lstm_from(x, p, *reset_state(p, len(x)))[0]


def lstm_from(x: np.ndarray, p, h: np.ndarray, c: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Run the LSTM on int8 sequences x (N, T, F) from the state (h, c), each (N, S) (int8 hidden,
    int16 cell); returns (the int8 hidden states (N, T, S), the final h, the final c)."""
    n, steps, _ = x.shape
    s = p.w_rec.shape[1]
    h = np.asarray(h, np.int64).reshape(n, s)
    c = np.asarray(c, np.int64).reshape(n, s)
    t_mult, t_shift = int(p.tanh_mult), int(p.tanh_shift)
    out = np.empty((n, steps, s), np.int64)
    for t in range(steps):
        xt = x[:, t, :]
        gates = []
        for g in range(4):
            pre = _fc16(xt, p.in_zp, p.w_in[g], p.bias[g], int(p.fc_mult[0, g]), int(p.fc_shift[0, g]))
            pre = _sat16(pre + _fc16(h, p.hid_zp, p.w_rec[g], None, int(p.fc_mult[1, g]), int(p.fc_shift[1, g])))
            if g == 2 and p.cell_act == "tanh":
                gates.append(tanh_int16(pre, 3, 0))  # Q3.12 in: TFLite's Tanh(-12, ...)
            else:
                gates.append(sigmoid_int16(pre))
        gi, gf, gc, go = gates
        c = _sat16(multiply_by_quantized_multiplier(gf * c, p.cell_mult, p.cell_shift))
        upd = _sat16(multiply_by_quantized_multiplier(gi * gc, p.gate_mult, p.gate_shift))
        c = _sat16(c + upd)
        if p.cell_clip > 0:
            c = np.clip(c, -p.cell_clip, p.cell_clip)
        th = tanh_int16(c, t_mult, t_shift)
        h = np.clip(multiply_by_quantized_multiplier(th * go, p.hid_mult, p.hid_shift) + p.hid_zp, -128, 127)
        out[:, t] = h
    return out, h, c
