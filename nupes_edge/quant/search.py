"""Bracketed 1-D minimization: a coarse grid finds the basin, golden-section search refines it.

The weight reconstruction error is only locally convex in the exponent (rounding makes it a
step function at fine scale), so a grid first keeps the golden-section search in the right basin.
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np

_INV_PHI = (math.sqrt(5) - 1) / 2


def golden_section(f: Callable[[float], float], lo: float, hi: float, tol: float = 1e-4) -> tuple[float, float]:
    """Minimize a unimodal ``f`` on [lo, hi]; returns (x, f(x)) of the best point evaluated."""
    best = (lo, f(lo))
    fhi = f(hi)
    if fhi < best[1]:
        best = (hi, fhi)
    c, d = hi - _INV_PHI * (hi - lo), lo + _INV_PHI * (hi - lo)
    fc, fd = f(c), f(d)
    while hi - lo > tol:
        if fc <= fd:
            hi, d, fd = d, c, fc
            c = hi - _INV_PHI * (hi - lo)
            fc = f(c)
        else:
            lo, c, fc = c, d, fd
            d = lo + _INV_PHI * (hi - lo)
            fd = f(d)
        for x, fx in ((c, fc), (d, fd)):
            if fx < best[1]:
                best = (x, fx)
    return best


def bracketed_minimize(f: Callable[[float], float], lo: float, hi: float, grid: int = 17,
                       tol: float = 1e-3) -> tuple[float, float]:
    """Grid search on [lo, hi], then golden-section search between the best point's neighbours."""
    xs = np.linspace(lo, hi, grid)
    fs = [f(float(x)) for x in xs]
    i = int(np.argmin(fs))
    a, b = float(xs[max(i - 1, 0)]), float(xs[min(i + 1, grid - 1)])
    x, fx = golden_section(f, a, b, tol)
    return (x, fx) if fx <= fs[i] else (float(xs[i]), float(fs[i]))
