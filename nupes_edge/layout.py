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


def weights_hwc(w: np.ndarray, op: str, flatten_src_shape=None) -> np.ndarray:
    """A conv / dense weight (codes or values) in the device's order, one row per output channel.

    conv OIHW → O(H·W·I); a dense layer fed by a Flatten of a C×H×W tensor gets its columns
    permuted from torch's (c, y, x) order to the HWC order the device's flattened tensor has.
    """
    if op == "conv2d":
        return np.ascontiguousarray(w.transpose(0, 2, 3, 1)).reshape(w.shape[0], -1)
    if flatten_src_shape is not None and len(flatten_src_shape) == 3:
        c, h, wd = flatten_src_shape
        return np.ascontiguousarray(w.reshape(w.shape[0], c, h, wd).transpose(0, 2, 3, 1)).reshape(w.shape[0], -1)
    return w.reshape(w.shape[0], -1)
