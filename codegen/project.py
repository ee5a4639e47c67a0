"""The files that make a generated folder a drop-in library for the user's own firmware
(docs/integration.md): CMakeLists.txt, model.mk and example_main.c.

Only derived names (the C model name, our own file names) and numbers checked here reach them.
"""
from __future__ import annotations

import os

import numpy as np

from .. import __version__, runtime_c
from ..errors import NupesError
from ..intref import quantize_input, run_int
from ..layout import to_device
from ..qmodel import QuantModel
from .cvalues import c_float32, c_ints
from .plan import Plan

PROJECT_FILES = ("CMakeLists.txt", "model.mk", "example_main.c")


def _c_quantize(x: np.ndarray, scale: np.float32, zp: int) -> np.ndarray:
    """example_main.c's quantize_input, in float32 as C computes it (FLT_EVAL_METHOD 0)."""
    v = np.clip(x.astype(np.float32) / scale, np.float32(-256), np.float32(256))
    r = np.where(v < 0, v - np.float32(0.5), v + np.float32(0.5)).astype(np.float32)
    return np.clip(np.trunc(r).astype(np.int64) + zp, -128, 127).astype(np.int8)


def example_io(qm: QuantModel, x: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, str]:
    """(float32 input in the device's HWC order, the reference's int8 output for it, where it came
    from). The input is ``x`` (one sample, the IR's layout) quantized as the reference does and
    given back as floats on the input grid, scale * (q - zp): example_main.c's float quantization
    then lands exactly on q (checked here), so its output is the reference's bit for bit. Without
    ``x``, a zero input (every element at the zero point)."""
    shape = tuple(qm.graph.input_shape)
    zp, scale = int(qm.input_q.zero_point), float(qm.input_q.scale)
    if x is None:
        q = np.full((1,) + shape, zp, np.int8)
        origin = "a zero input (no calibration data was found)"
    else:
        x = np.asarray(x, np.float64)
        if x.shape != shape:
            raise NupesError(f"example input has shape {list(x.shape)}, the model takes {list(shape)}")
        if not np.all(np.isfinite(x)):
            raise NupesError("example input: not every value is finite")
        q = quantize_input(x[None], scale, zp)
        origin = "the first calibration input"
    s32 = np.float32(scale)
    snapped = (s32 * (q.astype(np.int64) - zp).astype(np.float32)).astype(np.float32)
    if not np.array_equal(_c_quantize(snapped, s32, zp), q):  # pragma: no cover - |error| << 0.5 by construction
        raise RuntimeError("example input: float32 round trip does not reproduce the int8 input")
    ref = run_int(qm, q)
    return to_device(snapped)[0], to_device(ref)[0], origin


def _lines(texts: list[str], per_line: int) -> list[str]:
    return [", ".join(texts[i:i + per_line]) + "," for i in range(0, len(texts), per_line)]


def render_project(qm: QuantModel, p: Plan, stem: str, x: np.ndarray | None = None) -> dict[str, str]:
    """The build files and the example as {file name: text}; ``x``: the example's input (see example_io)."""
    from . import _env  # the package's Jinja2 environment (templates/)

    inp, ref, origin = example_io(qm, x)
    if inp.size != p.input_size or ref.size != p.output_size:  # pragma: no cover - plan and reference disagree
        raise RuntimeError("example input/output sizes differ from the plan's")
    ctx = {
        "name": p.name, "NAME": p.name.upper(), "stem": stem, "version": __version__,
        "softmax": bool(qm.graph.output_softmax), "input_origin": origin,
        "model_srcs": [f"{stem}.c", f"{stem}_data.c"],
        "runtime_srcs": [f"runtime/{os.path.basename(f)}" for f in runtime_c.sources()],
        "input_lines": _lines([c_float32(v, "example input") for v in inp.tolist()], 8),
        "reference_lines": _lines([str(v) for v in c_ints(ref, -128, 127, "example reference output").tolist()], 16),
    }
    return {f: _env.get_template(f + ".j2").render(ctx) for f in PROJECT_FILES}
