"""Integer parameters of each node: what the integer reference and the C runtime compute with."""
from __future__ import annotations

import math

from dataclasses import dataclass

import numpy as np

from .packing import unpack_rows


@dataclass
class IntLayer:
    """conv2d / linear: acc = Σ sign(q)·L[|q|]·(x - in_zp) + bias;
    out = clamp(out_zp + MBQM(acc, mult, shift), act_min, act_max)."""

    bits: int
    a: float
    G: int  # table shift: L[Qmax] = Qmax · 2^G
    lut: np.ndarray  # int16, Qmax + 1 levels
    packed: np.ndarray  # uint8 (O, row_bytes): b-bit sign-magnitude codes, rows in OIHW / OI order
    weight_shape: list  # the float weight's shape (OIHW / OI)
    bias: np.ndarray  # int32 per output channel
    mult: np.ndarray  # int32 per output channel
    shift: np.ndarray  # int32 per output channel
    in_zp: int
    out_zp: int
    act_min: int
    act_max: int
    acc_bound: np.ndarray  # int64 per channel: Σ|L[q]|·max|x - in_zp| + |bias| (< 2^31, proven)

    @property
    def codes(self) -> np.ndarray:
        """The int8 codes, unpacked from flash format, weight-shaped."""
        k = math.prod(self.weight_shape[1:])
        return unpack_rows(self.packed, self.bits, k).reshape(self.weight_shape)

    def levels(self) -> np.ndarray:
        """The signed int16 weight levels sign(q)·L[|q|], decoded from the packed codes, weight-shaped."""
        c = self.codes.astype(np.int32)
        return np.sign(c) * self.lut.astype(np.int32)[np.abs(c)]


@dataclass
class IntAdd:
    """TFLite's int8 ADD: both inputs rescaled to a common 2^-20 grid, summed, requantized."""

    in1_zp: int
    in2_zp: int
    in1_mult: int
    in1_shift: int
    in2_mult: int
    in2_shift: int
    out_mult: int
    out_shift: int
    left_shift: int
    out_zp: int
    act_min: int
    act_max: int


@dataclass
class IntMul:
    """TFLite's int8 MUL: out = clamp(out_zp + MBQM((x1 - in1_zp) * (x2 - in2_zp), mult, shift), act_min,
    act_max), with (mult, shift) = QuantizeMultiplier(s1 * s2 / s_out) in double from the float32 scales."""

    in1_zp: int
    in2_zp: int
    mult: int
    shift: int
    out_zp: int
    act_min: int
    act_max: int


@dataclass
class IntClamp:
    """An op whose output keeps the input's quantization, clamped to [lo, hi] (pools, ReLU)."""

    lo: int
    hi: int


@dataclass
class IntMean:
    """TFLite Micro's int8 MEAN over ``count`` values (reference_ops::QuantizedMeanOrSum):
    out = clamp(MBQM(Σx - in_zp·count, mult, shift) + out_zp, -128, 127), with (mult, shift) the
    input/output scale ratio's multiplier already folded with 1/count as TFLite Micro folds it."""

    mult: int
    shift: int
    in_zp: int
    out_zp: int
    count: int


@dataclass
class IntSoftmax:
    """TFLite Micro's int8 softmax (intref/softmax.py): the input's scale · beta as a Q5.26
    multiplier and left shift, and the smallest difference from the row maximum that counts."""

    input_mult: int
    input_left_shift: int
    diff_min: int


@dataclass
class IntTable:
    """An elementwise int8 activation as its 256 outputs, for inputs -128..127 (index x + 128)."""

    table: np.ndarray  # int8 (256,)


@dataclass
class IntLstm:
    """TFLite Micro's int8 UNIDIRECTIONAL_SEQUENCE_LSTM (intref/lstm.py): int8 weights per gate (input,
    forget, cell, output), int16 gates on 2^-12 / 2^-15 grids, an int16 cell state, int8 hidden state."""

    w_in: np.ndarray  # int8 (4, S, F): the input's weights per gate
    w_rec: np.ndarray  # int8 (4, S, S): the previous hidden state's weights per gate
    bias: np.ndarray  # int32 (4, S)
    fc_mult: np.ndarray  # int32 (2, 4): the input and recurrent FCs' multipliers, per gate
    fc_shift: np.ndarray  # int32 (2, 4)
    in_zp: int
    hid_zp: int  # the hidden state's (and the output's) zero point
    cell_mult: int  # forget gate x cell state -> cell state
    cell_shift: int
    gate_mult: int  # input gate x cell gate -> cell state
    gate_shift: int
    hid_mult: int  # tanh(cell state) x output gate -> int8 hidden state
    hid_shift: int
    tanh_mult: int  # the int16 tanh of the cell state: its input scaling (intref/lstm.tanh_params)
    tanh_shift: int
    cell_clip: int  # |cell state| limit in int16 codes; 0: none
    cell_act: str  # the cell gate's activation: "tanh" or "sigmoid"
    w_scales: np.ndarray  # float32 (8,): the weights' scales, input then recurrent, per gate (for export)
    cell_scale: float  # the int16 cell state's scale (for export)


@dataclass
class IntSvdf:
    """TFLite Micro's int8 SVDF (intref/svdf.py): int8 feature weights, each filter's activation requantized
    into an int16 (or int8) state, the state's time weights summed over rank filters per unit, requantized
    to the int8 output."""

    w_feature: np.ndarray  # int8 (F, I)
    w_time: np.ndarray  # int16 (F, M): int16 values, or int8 ones when state_bits is 8
    bias: np.ndarray  # int32 (U,), U = F / rank
    rank: int
    state_bits: int  # 16 or 8: the activation state's (and the time weights') type
    in_zp: int
    state_zp: int  # 0 for an int16 state
    out_zp: int
    mult1: int  # input x feature weights -> state (effective_scale_1)
    shift1: int
    mult2: int  # state x time weights -> output (effective_scale_2)
    shift2: int
    feature_scale: float  # the weights' and the state's float32 scales (for export)
    time_scale: float
    state_scale: float
