"""Between the IR's layout (C, H, W per sample) and the C runtime's (H, W, C)."""
from __future__ import annotations

import numpy as np


def to_device(x: np.ndarray) -> np.ndarray:
    """(N, C, H, W) or (N, F) int8 → (N, bytes) in the device's HWC order."""
    if x.ndim == 4:
        x = x.transpose(0, 2, 3, 1)
    return np.ascontiguousarray(x.reshape(len(x), -1))


def from_device(y: np.ndarray, shape: tuple) -> np.ndarray:
    """(N, bytes) device outputs → (N, *shape) in the IR's layout."""
    if len(shape) == 3:
        c, h, w = shape
        return np.ascontiguousarray(y.reshape(len(y), h, w, c).transpose(0, 3, 1, 2))
    return y.reshape((len(y),) + tuple(shape))
