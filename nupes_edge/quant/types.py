"""Small typed objects that cross the quantization stage boundaries."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

METHODS = ("uniform", "uniform-mse", "powerquant", "adaround", "nupes")


@dataclass
class ActQuant:
    """int8 asymmetric activation quantization: real = scale · (q - zero_point)."""

    scale: float
    zero_point: int


@dataclass
class LayerWeights:
    """One layer's quantized weights: codes in [-Qmax, Qmax], exponent a, per-channel alpha,
    and the float bias the quantized layer uses (bias correction / learning may change it)."""

    bits: int
    a: float
    alpha: np.ndarray  # (out_channels,) float64
    codes: np.ndarray  # int8, same shape as the float weight
    bias: np.ndarray | None = None  # (out_channels,) float64; None = the float model's bias
