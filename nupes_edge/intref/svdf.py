"""TFLite Micro's int8 SVDF (kernels/svdf_common.cc, EvalIntegerSvdfReference), exactly.

One invocation on a state of F filters x M steps: the state moves one step to the left (the whole
buffer by one value, as TFLite Micro does), each filter's newest value becomes its feature dot product
(int8 weights times input - zero point) requantized by effective_scale_1, limited to the state's type
and moved by the state's zero point (stored in the state's type: an int8 state wraps), then each
filter's time dot product (time weights times state - zero point) in int32, summed over the rank
filters of each unit onto the bias, requantized by effective_scale_2 to the int8 output. TFLite Micro
applies no fused activation to an int8 SVDF: the output is limited to the int8 range only.

A nupes-edge inference starts from the reset state (TFLite Micro's ResetVariableTensors: an int8 state
at its zero point, an int16 one at 0), so svdf() runs one invocation from it; svdf_step() is the
invocation itself, on any state (reference.run_int carries it from row to row for a "carry" model).
"""
from __future__ import annotations

import numpy as np

from .fixedpoint import multiply_by_quantized_multiplier, quantize_multiplier


def effective_scales(s_in: float, s_feature: float, s_state: float, s_time: float, s_out: float
                     ) -> tuple[tuple[int, int], tuple[int, int]]:
    """PrepareSvdf's two multipliers: the float32 scales widened to double, multiplied and divided in
    double, quantized (QuantizeMultiplier). This is the tflite_micro runtime's arithmetic (its PrepareSvdf
    converts each scale with cvtss2sd before mulsd / divsd: the form of TFLite Micro's d5d82e2); the
    svdf_common.cc of commit 90b983c multiplies in float32 first (b298266 reverted d5d82e2), which
    differs in the last bits (tests/test_svdf.py has a case that tells them apart)."""
    d = [float(np.float32(v)) for v in (s_in, s_feature, s_state, s_time, s_out)]
    return quantize_multiplier(d[0] * d[1] / d[2]), quantize_multiplier(d[2] * d[3] / d[4])


def bias_scale_ok(s_bias: float, s_state: float, s_time: float) -> bool:
    """PrepareSvdf's check of the bias's scale, in double as the runtime computes it."""
    return abs(float(np.float32(s_bias)) - float(np.float32(s_state)) * float(np.float32(s_time))) < 1e-5


def _wrap(v: np.ndarray, bits: int) -> np.ndarray:
    """A value stored into an int8 / int16 (two's complement, as the C cast does on every target)."""
    half = 1 << (bits - 1)
    return ((v + half) & ((1 << bits) - 1)) - half


def reset_state(p, n: int) -> np.ndarray:
    memory = np.asarray(p.w_time).shape[1]
    value = int(p.state_zp) if int(p.state_bits) == 8 else 0
    return np.full((n, np.asarray(p.w_feature).shape[0] * memory), value, np.int64)


def svdf_step(x: np.ndarray, state: np.ndarray, p) -> tuple[np.ndarray, np.ndarray]:
    """One invocation: int8 inputs x (N, I) and states (N, F * M) -> (int8 outputs (N, U), new states)."""
    wf = np.asarray(p.w_feature, np.int64)
    wt = np.asarray(p.w_time, np.int64)
    filters, memory = wt.shape
    bits, zp = int(p.state_bits), int(p.state_zp)
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    state = np.concatenate([state[:, 1:], state[:, :1]], axis=1)  # shift left; the last value is overwritten
    dot = (np.asarray(x, np.int64) - int(p.in_zp)) @ wf.T
    act = np.clip(multiply_by_quantized_multiplier(dot, int(p.mult1), int(p.shift1)), lo, hi)
    state = state.reshape(len(x), filters, memory).copy()
    state[:, :, memory - 1] = _wrap(zp + act, bits)
    sums = ((state - zp) * wt[None]).sum(axis=2)  # (N, F), int32 in TFLite Micro (validate.check_svdf bounds it)
    units = filters // int(p.rank)
    acc = np.asarray(p.bias, np.int64)[None] + sums.reshape(len(x), units, int(p.rank)).sum(axis=2)
    y = np.clip(multiply_by_quantized_multiplier(acc, int(p.mult2), int(p.shift2)) + int(p.out_zp), -128, 127)
    return y, state.reshape(len(x), -1)


def svdf(x: np.ndarray, p) -> np.ndarray:
    """int8 inputs (N, I) -> int8 outputs (N, U), each from the reset state."""
    y, _ = svdf_step(x, reset_state(p, len(x)), p)
    return y
