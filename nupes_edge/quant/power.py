"""Sign–magnitude power quantization (PowerQuant / NUPES) and its decode table.

b bits, Qmax = 2^(b-1) - 1, per-output-channel scale alpha_c, per-layer exponent a:
  encode  q = clip(round(Qmax · sign(w) · (|w|/alpha_c)^a), -Qmax, Qmax)
  decode  w = sign(q) · alpha_c · (|q|/Qmax)^(1/a)
a = 1 is ordinary symmetric uniform quantization. Rounding is half away from zero throughout.
"""
from __future__ import annotations

import numpy as np

INT16_MAX = 32767


def qmax(bits: int) -> int:
    return (1 << (bits - 1)) - 1


def round_half_away(x):
    """Round to nearest, ties away from zero (C's lround / TfLiteRound)."""
    return np.sign(x) * np.floor(np.abs(x) + 0.5)


def channel_view(v: np.ndarray, ndim: int) -> np.ndarray:
    """A per-output-channel vector shaped to broadcast against an ndim weight."""
    return np.asarray(v, np.float64).reshape((-1,) + (1,) * (ndim - 1))


def minmax_alpha(w: np.ndarray) -> np.ndarray:
    """Per-output-channel max |w|; an all-zero channel gets 1 so scales stay finite."""
    m = np.abs(w.reshape(w.shape[0], -1)).max(axis=1).astype(np.float64)
    return np.where(m > 0, m, 1.0)


def encode(w: np.ndarray, alpha: np.ndarray, a: float, bits: int) -> np.ndarray:
    q = qmax(bits)
    u = np.minimum(np.abs(w) / channel_view(alpha, w.ndim), 1.0)
    mag = np.minimum(np.floor(q * u ** a + 0.5), q)
    return (np.sign(w) * mag).astype(np.int8)


def decode(codes: np.ndarray, alpha: np.ndarray, a: float, bits: int) -> np.ndarray:
    q = qmax(bits)
    return np.sign(codes) * channel_view(alpha, codes.ndim) * (np.abs(codes.astype(np.float64)) / q) ** (1.0 / a)


LEVELS = (16, 8)  # quantize --levels: int16 levels (the default), or int8 levels times 2^E


def level_shift(bits: int, G: int, levels: int = 16) -> int:
    """E: with ``levels`` = 8 the table's levels are int8 values times 2^E (what Helium's 8-bit dot
    products take), E = G minus the largest shift with Qmax · 2^shift <= 127; 0 for int16 levels."""
    if levels == 16:
        return 0
    return max(int(G) - int(np.floor(np.log2(127 / qmax(bits)))), 0)


def make_lut(a: float, bits: int, G: int, levels: int = 16) -> np.ndarray:
    """L[m] = 2^E · round(Qmax · 2^(G-E) · (m/Qmax)^(1/a)) for m = 0..Qmax, as int16 levels
    (E = level_shift(bits, G, levels): 0 for int16 levels)."""
    q = qmax(bits)
    m = np.arange(q + 1, dtype=np.float64)
    e = level_shift(bits, G, levels)
    lut = np.floor(q * 2.0 ** (G - e) * (m / q) ** (1.0 / a) + 0.5) * 2.0 ** e
    if lut.max() > INT16_MAX:
        raise ValueError(f"LUT level {lut.max()} exceeds int16 (a={a}, bits={bits}, G={G})")
    return lut.astype(np.int16)


def max_table_shift(bits: int) -> int:
    """The largest G for which L[Qmax] = Qmax · 2^G still fits int16."""
    return int(np.floor(np.log2(INT16_MAX / qmax(bits))))
