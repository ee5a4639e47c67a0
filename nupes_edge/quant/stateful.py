"""The stateful operators' weights (LSTM, SVDF) quantized by the chosen method, in the form TFLite
Micro's int8 kernels compute.

The LSTM kernel (intref/lstm.py, runtime_c/nupes_lstm.c, TFLite Micro's LstmStep) multiplies int8
weights with one scale per gate matrix; the SVDF (intref/svdf.py) int8 feature weights and int16
(or int8) time weights, one scale each. A re-quantized model quantizes each such matrix with the
method, at the model's weight bits, as one channel: its 2^b - 1 levels,
L[m] = round(Qmax · 2^G · (m / Qmax)^(1/a)) with G the largest shift keeping L[Qmax] <= 127, are int8
values, and the matrix's scale is alpha / (Qmax · 2^G) (a = 1: uniform codes times 2^G). So the method
decides the values (uniform: min-max; uniform-mse: MSE clipping; powerquant, and nupes: the
data-free exponent search; adaround: min-max), and the values are stored as the kernel reads them
(an LSTM re-quantized to 4 bits takes the flash of an int8 one). The reconstruction methods do not
fit these matrices to the operator's outputs (their layers are the convolutions and dense layers).
"""
from __future__ import annotations

import math

import numpy as np

from . import powerquant, uniform
from .power import make_lut, qmax

_DATA_FREE = {"uniform": uniform.quantize_minmax, "uniform-mse": uniform.quantize_mse,
              "powerquant": powerquant.quantize, "nupes": powerquant.quantize, "adaround": uniform.quantize_minmax}


def int8_levels(w: np.ndarray, method: str, bits: int) -> tuple[np.ndarray, float]:
    """One weight matrix -> (int8 weights, float32 scale): the method's levels as int8 values."""
    lw = _DATA_FREE[method](np.asarray(w, np.float64).reshape(1, -1), bits)
    G = int(math.floor(math.log2(127 / qmax(bits))))
    lut = make_lut(lw.a, bits, G).astype(np.int64)
    codes = lw.codes.astype(np.int64).reshape(w.shape)
    values = np.sign(codes) * lut[np.abs(codes)]
    scale = float(np.float32(float(lw.alpha[0]) / (qmax(bits) * 2.0 ** G)))
    return values.astype(np.int8), scale


def quantize_lstm(weight: np.ndarray, features: int, method: str, bits: int) -> dict:
    """The IR's (4, S, F + S) float weights -> {"w_in": (4, S, F), "w_rec": (4, S, S) int8, "w_scales": 8
    float32 scales (input gates, then recurrent), "bits"}."""
    w_in, w_rec, scales = [], [], []
    for j in range(8):
        g = j % 4
        m = weight[g][:, :features] if j < 4 else weight[g][:, features:]
        q, s = int8_levels(m, method, bits)
        (w_in if j < 4 else w_rec).append(q)
        scales.append(s)
    return {"w_in": np.stack(w_in), "w_rec": np.stack(w_rec), "w_scales": scales, "bits": int(bits)}


def quantize_svdf(weight: np.ndarray, inputs: int, method: str, bits: int) -> dict:
    """The IR's (F, I + M) float weights -> {"w_feature": (F, I) int8, "w_time": (F, M) int16 holding int8
    values, "feature_scale", "time_scale"}."""
    wf, sf = int8_levels(weight[:, :inputs], method, bits)
    wt, st = int8_levels(weight[:, inputs:], method, bits)
    return {"w_feature": wf, "w_time": wt.astype(np.int16), "feature_scale": sf, "time_scale": st}


def cell_scale_bound(steps: int, cell_clip: float) -> float:
    """The int16 cell state's scale when no file gives one: a power of two (TFLite Micro's LSTM needs
    one) over the largest |c| the recurrence can reach, so it never saturates: |c_t| <= |c_{t-1}| +
    |i · g| < t (each gate below 1), and at most the clip when there is one."""
    bound = min(float(steps), float(cell_clip)) if cell_clip > 0 else float(steps)
    return 2.0 ** (math.ceil(math.log2(max(bound, 1.0))) - 15)
