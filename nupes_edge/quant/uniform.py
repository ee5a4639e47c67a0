"""Uniform (a = 1) per-channel weight quantization: min-max or MSE-optimal clipping."""
from __future__ import annotations

import numpy as np

from .power import decode, encode, minmax_alpha
from .types import LayerWeights


def quantize_minmax(w: np.ndarray, bits: int) -> LayerWeights:
    alpha = minmax_alpha(w)
    return LayerWeights(bits, 1.0, alpha, encode(w, alpha, 1.0, bits))


def mse_alpha(w: np.ndarray, bits: int, a: float = 1.0, ratios: np.ndarray | None = None) -> np.ndarray:
    """Per-channel clipping alpha minimizing the weight reconstruction MSE over a ratio grid."""
    ratios = np.linspace(0.3, 1.0, 71) if ratios is None else ratios
    base = minmax_alpha(w)
    w2 = w.reshape(w.shape[0], -1).astype(np.float64)
    best_err = np.full(w.shape[0], np.inf)
    best = base.copy()
    for r in ratios:
        alpha = base * r
        err = ((decode(encode(w2, alpha, a, bits), alpha, a, bits) - w2) ** 2).sum(axis=1)
        better = err < best_err
        best_err[better], best[better] = err[better], alpha[better]
    return best


def quantize_mse(w: np.ndarray, bits: int) -> LayerWeights:
    alpha = mse_alpha(w, bits)
    return LayerWeights(bits, 1.0, alpha, encode(w, alpha, 1.0, bits))
