"""The real TFLite interpreters, run the way the tests and benchmarks compare against them.

LiteRT runs with its builtin *reference* kernels (no XNNPACK, no optimized builtins): those are
plain integer C, so their outputs are the same on every CPU. LiteRT's default kernels round
differently and differ across CPUs (up to 2 LSB seen on an int8 model), so they are never an
oracle here. TFLite Micro (``tflite-micro``) is the bit-exact oracle for int8 files.
"""
from __future__ import annotations

import numpy as np


def litert_interpreter(data: bytes, preserve_all_tensors: bool = False):
    """A LiteRT interpreter over ``data`` with the builtin reference kernels, tensors allocated."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    it = Interpreter(model_content=data, experimental_op_resolver_type=OpResolverType.BUILTIN_REF,
                     experimental_preserve_all_tensors=preserve_all_tensors)
    it.allocate_tensors()
    return it


def run_litert(data: bytes, rows: np.ndarray, carry: bool = False) -> np.ndarray:
    """Each row of ``rows`` through LiteRT (reshaped to the model's input), each from the reset state
    (as run_tflm), or with ``carry`` as one sequence (reset once, before the first row); (N, output size)."""
    it = litert_interpreter(data)
    i, o = it.get_input_details()[0], it.get_output_details()[0]
    out = []
    for k, r in enumerate(rows):
        if k == 0 or not carry:
            it.reset_all_variables()
        it.set_tensor(i["index"], np.asarray(r).reshape(i["shape"]).astype(i["dtype"]))
        it.invoke()
        out.append(it.get_tensor(o["index"]).ravel().copy())
    return np.array(out)


def run_tflm(data: bytes, rows: np.ndarray, carry: bool = False) -> np.ndarray:
    """Each int8 row through the TFLite Micro interpreter, each from the reset state (a stateful
    operator's variables, an LSTM's hidden and cell state, are reset before every row: one row is one
    whole inference, as a "reset" model runs); with ``carry``, the rows are one sequence: reset once
    before the first, then each Invoke() continues from the previous one's variables, as TFLite Micro
    runs a streaming model (a "carry" model, nupes_edge/state.py); (N, output size)."""
    from tflite_micro import runtime

    it = runtime.Interpreter.from_bytes(data)
    shape = it.get_input_details(0)["shape"]
    out = []
    for k, r in enumerate(rows):
        if k == 0 or not carry:
            it.reset()
        it.set_input(np.asarray(r).reshape(shape), 0)
        it.invoke()
        out.append(it.get_output(0).ravel().copy())
    return np.array(out)

