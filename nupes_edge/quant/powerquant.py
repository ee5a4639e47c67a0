"""PowerQuant (data-free): per-layer exponent a by a bracketed search on weight reconstruction error.

alpha_c is the per-channel max |w| (no data needed, nothing clipped); a is searched on
[A_MIN, A_MAX]. The error is locally convex in a, so grid + golden section finds its minimum.
"""
from __future__ import annotations

import numpy as np

from .power import decode, encode, minmax_alpha
from .search import bracketed_minimize
from .types import LayerWeights

A_MIN, A_MAX = 0.2, 1.5


def reconstruction_error(w: np.ndarray, alpha: np.ndarray, a: float, bits: int) -> float:
    return float(((decode(encode(w, alpha, a, bits), alpha, a, bits) - w) ** 2).sum())


def search_exponent(w: np.ndarray, alpha: np.ndarray, bits: int) -> float:
    a, _ = bracketed_minimize(lambda a: reconstruction_error(w, alpha, a, bits), A_MIN, A_MAX)
    return a


def quantize(w: np.ndarray, bits: int) -> LayerWeights:
    alpha = minmax_alpha(w)
    a = search_exponent(w.astype(np.float64), alpha, bits)
    return LayerWeights(bits, a, alpha, encode(w, alpha, a, bits))
