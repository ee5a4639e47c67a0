"""Evaluation and calibration data: a bundled example name or an .npz with ``x`` and, optionally,
``y`` (integer labels: without them there is no top-1, only error metrics against the float model)."""
from __future__ import annotations

import os

import numpy as np

from . import examples
from .errors import NupesError
from .npyfile import read_npz


def load_data(spec: str, split: str = "test", input_shape: tuple[int, ...] | None = None,
              n_classes: int | None = None, layout: str = "NCHW") -> tuple[np.ndarray, np.ndarray | None]:
    """``(x, y)`` from a bundled name (its ``split``) or an .npz file (all of it).

    x is float (float32, or float64 / float16 converted) exactly as the model takes it
    (N × input_shape); y integer labels (in [0, n_classes) when the model's output size is given),
    or None when the .npz has none.
    """
    if spec in examples.NAMES:
        x, y = examples.load(spec, split)
    else:
        if not os.path.isfile(spec):
            raise NupesError(f"{spec}: no such file, and not a bundled data set ({', '.join(examples.NAMES)})")
        with open(spec, "rb") as f:
            if f.read(4) != b"PK\x03\x04":
                raise NupesError(f"{spec}: not an .npz file (an .npz is a zip of arrays x and y, written by numpy.savez)")
        arrays = read_npz(spec, ("x",), optional=("y",))
        x, y = arrays["x"], arrays.get("y")
        if x.dtype in (np.float64, np.float16):
            x = x.astype(np.float32)  # as the Python API takes it
        if x.dtype != np.float32:
            raise NupesError(f"{spec}: 'x' must be float32 (got {x.dtype}); store it exactly as the model takes it")
        if y is not None and not np.issubdtype(y.dtype, np.integer):
            raise NupesError(f"{spec}: 'y' must hold integer labels (got {y.dtype}); leave it out for a model "
                             "without classes (regression, autoencoder): the error metrics need no labels")
        if y is not None and (y.ndim != 1 or len(y) != len(x)):
            raise NupesError(f"{spec}: 'y' must be a vector with one label per row of 'x' ({len(x)}), got shape {list(y.shape)}")
        if len(x) == 0:
            raise NupesError(f"{spec}: 'x' is empty")
        if not np.isfinite(x).all():
            raise NupesError(f"{spec}: 'x' contains NaN or infinite values")
    if spec not in examples.NAMES:  # the bundled sets are stored as the graph takes them (C x H x W)
        x = to_graph_layout(x, input_shape, layout, spec)
    if input_shape is not None and tuple(x.shape[1:]) != tuple(input_shape):
        raise NupesError(f"{spec}: 'x' has shape {list(x.shape)}, the model takes N×{list(input_shape)}")
    if y is not None and n_classes is not None and len(y) and (y.min() < 0 or y.max() >= n_classes):
        bad = int(y.min()) if y.min() < 0 else int(y.max())
        raise NupesError(f"{spec}: label {bad} is outside the model's {n_classes} classes (0..{n_classes - 1})")
    return np.ascontiguousarray(x, np.float32), None if y is None else np.asarray(y, np.int64)


def to_graph_layout(x: np.ndarray, input_shape: tuple[int, ...] | None, layout: str, what: str) -> np.ndarray:
    """Data as the model's source takes it -> the graph's C x H x W. A .tflite model takes
    N x H x W x C; anything else is refused with the layout it expects."""
    if layout != "NHWC" and input_shape is not None and len(input_shape) == 3 and input_shape[1] == 1 \
            and x.ndim == 3 and tuple(x.shape[1:]) == (input_shape[0], input_shape[2]):
        return x.reshape(len(x), input_shape[0], 1, input_shape[2])  # PyTorch's N x C x L (a Conv1d model)
    if layout != "NHWC" or input_shape is None or len(input_shape) != 3:
        return x
    c, h, w = input_shape
    if h == 1 and x.ndim == 3 and tuple(x.shape[1:]) == (w, c):  # a sequence model's N x T x C
        x = x.reshape(len(x), 1, w, c)
    if x.ndim != 4 or tuple(x.shape[1:]) != (h, w, c):
        raise NupesError(f"{what}: 'x' has shape {list(x.shape)}; this .tflite model takes N x H x W x C = "
                         f"N×{[h, w, c]}")
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))

