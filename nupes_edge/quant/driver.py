"""The quantization driver: float graph + calibration data → QuantModel."""
from __future__ import annotations

import sys
import time

import numpy as np
import torch

from ..errors import NupesError
from ..ir import Graph, with_device_softmax
from ..qmodel import QuantModel
from .. import state as state_mod
from . import keep as keep_mod
from . import mixed, powerquant, reconstruct, uniform
from .biascorr import correct_biases
from .calibrate import calibrate
from .lower import lower
from .stateful import quantize_lstm, quantize_svdf
from .power import LEVELS
from .types import METHODS

__all__ = ["quantize_graph", "layer_bits"]


STATEFUL_OPS = ("lstm", "svdf")  # weight-carrying ops outside WEIGHT_OPS (quant/stateful.py)


def layer_bits(graph: Graph, wbits: int, overrides: dict[str, int] | None = None,
               ops: tuple[str, ...] | None = None) -> dict[str, int]:
    """Bits per weight layer (``ops``: per LSTM / SVDF instead): ``wbits`` everywhere, except the named
    ``overrides``, which may name either kind."""
    overrides = overrides or {}
    names = {n.name for n in graph.weight_nodes()}
    stateful = {n.name for n in graph.nodes if n.op in STATEFUL_OPS}
    for name, b in list(overrides.items()) + [("--wbits", wbits)]:
        if name != "--wbits" and name not in names | stateful:
            raise NupesError(f"per-layer bits: no weight layer named '{name}' (layers: "
                             f"{', '.join(sorted(names | stateful))})")
        if not 2 <= int(b) <= 8:
            raise NupesError(f"{name}: weight bits must be 2..8, got {b}")
    return {n: int(overrides.get(n, wbits)) for n in (stateful if ops else names)}


def quantize_graph(graph: Graph, x_calib: np.ndarray | None, method: str = "nupes", wbits: int = 4,
                   overrides: dict[str, int] | None = None, seed: int = 0, progress: bool = False,
                   recon: reconstruct.ReconConfig | None = None, name: str = "model",
                   bias_correction: bool = True, flash_budget: int | None = None,
                   recalibrate: bool = False, keep_softmax: bool | None = None, levels: int = 16,
                   state: str = "reset") -> QuantModel:
    """Calibrate activations, quantize weights with ``method``, derive the integer parameters.

    The data-free methods (uniform, uniform-mse, powerquant) get empirical bias correction unless
    ``bias_correction`` is False; the reconstruction methods fit their layers' outputs directly.
    ``flash_budget`` (bytes): per-layer bits chosen to fit it (quant/mixed.py); ``overrides`` are
    then the layers the user pins.

    An int8 .tflite's own quantization (``graph.file_quant``) is kept unless ``recalibrate``: its
    activation scales and zero points always, and at uniform W8 its weights, scales and biases too,
    so the result is the file's model exactly (quant/keep.py). ``x_calib`` may then be None (no data
    needed), except for the methods that learn from data.

    ``keep_softmax``: a model ending in Softmax runs it on the device (int8 probabilities, TFLite
    Micro's arithmetic) instead of outputting the logits; default: only for a kept int8 file.

    ``levels``: 16, the weight tables' levels are int16; 8, they are int8 values times a power of two
    (power.make_lut), what the Cortex-M55's Helium kernels multiply directly (a little coarser for
    non-uniform 3- to 8-bit weights; uniform tables and 2-bit ones are the same either way).
    ``state``: "reset" or "carry" (nupes_edge/state.py; refused for a model with no LSTM or SVDF).
    """
    state_mod.check(graph, state)
    if method not in METHODS:
        raise NupesError(f"unknown method '{method}' (one of {', '.join(METHODS)})")
    if levels not in LEVELS:
        raise NupesError(f"levels must be 8 or 16 bits, not {levels!r}")
    keep = graph.file_quant is not None and not recalibrate
    if x_calib is None:
        if not keep:
            raise NupesError("calibration data is needed (--data): the model carries no int8 quantization of its "
                             "own" + (" (--recalibrate asks to compute it again)" if recalibrate else ""))
        if method in ("adaround", "nupes") or flash_budget is not None:
            raise NupesError(f"{'--flash-budget' if flash_budget is not None else method} learns from data: give "
                             "--data, or use a data-free method (uniform, powerquant) that keeps the file's "
                             "activation quantization")
    else:
        want = (len(x_calib),) + tuple(graph.input_shape)
        if x_calib.ndim != len(want) or tuple(x_calib.shape[1:]) != tuple(graph.input_shape):
            raise NupesError(f"calibration data has shape {list(x_calib.shape)}, the model takes N×{list(graph.input_shape)}")
        if len(x_calib) == 0:
            raise NupesError("calibration data is empty")
    if keep:
        keep_mod.check_keepable(graph)
    if keep_softmax or (keep_softmax is None and keep):
        graph = with_device_softmax(graph)
    bits = layer_bits(graph, wbits, overrides)
    torch.manual_seed(seed)
    np.random.seed(seed)
    t0 = time.perf_counter()
    allocation = None
    if flash_budget is not None:
        allocation = mixed.choose_bits(graph, x_calib, method, int(flash_budget), dict(overrides or {}),
                                       recon or reconstruct.ReconConfig(seed=seed), progress)
        bits = allocation.bits
    act = keep_mod.kept_activations(graph) if keep else calibrate(graph, x_calib, progress=progress)
    sbits = layer_bits(graph, wbits, overrides, STATEFUL_OPS)  # --layer-wbits may name them too
    every = set(bits.values()) | set(sbits.values())
    weights_kept = keep and method == "uniform" and (every == {8} or (not every and wbits == 8))
    if weights_kept:
        weights = keep_mod.kept_weights(graph, act)
    elif method in ("adaround", "nupes"):
        cfg = recon or reconstruct.ReconConfig(seed=seed)
        weights = reconstruct.quantize(graph, x_calib, act, bits, method, cfg, progress=progress)
    else:
        fn = {"uniform": uniform.quantize_minmax, "uniform-mse": uniform.quantize_mse,
              "powerquant": powerquant.quantize}[method]
        weights = {n.name: fn(n.weight, bits[n.name]) for n in graph.weight_nodes()}
        if bias_correction and x_calib is not None:
            weights = correct_biases(graph, x_calib, act, weights)
    # an LSTM's and an SVDF's weights: the file's when every layer keeps its own, or when it stays at 8 bits
    # on the file's activations (its own weights are the best 8 bits have); else the method's (quant/stateful.py)
    fq = graph.file_quant

    def kept_from_file(n) -> bool:
        return keep and n.name in getattr(fq, f"{n.op}s") and (weights_kept or sbits[n.name] == 8)

    quantizers = {"lstm": quantize_lstm, "svdf": quantize_svdf}
    redone = {n.name: (n.op, quantizers[n.op](n.weight, graph.shapes[n.inputs[0]][0], method, sbits[n.name]))
              for n in graph.nodes if n.op in quantizers and not kept_from_file(n)}
    lstms = {k: v for k, (op, v) in redone.items() if op == "lstm"}
    svdfs = {k: v for k, (op, v) in redone.items() if op == "svdf"}
    params = lower(graph, act, weights, kept=weights_kept, levels=levels, lstm=lstms, svdf=svdfs)
    if weights_kept:
        keep_mod.check_kept(graph, params)
    seconds = time.perf_counter() - t0
    if progress:
        print(f"quantized {name} with {method} in {seconds:.1f} s", file=sys.stderr)
    meta = {"name": name, "wbits": wbits, "layer_bits": bits, "seed": seed, "seconds": seconds,
            "bias_correction": bool(bias_correction and x_calib is not None and not weights_kept
                                    and method not in ("adaround", "nupes")),
            "calibration": ({"n": int(len(x_calib)), "input_range": [float(x_calib.min()), float(x_calib.max())]}
                            if x_calib is not None else {"n": 0})}
    if keep:
        meta["kept_from_file"] = keep_mod.describe(graph, weights_kept, method, {k: sbits[k] for k in redone})
    if allocation is not None:
        meta["flash_budget"] = allocation.as_meta()
    if levels != 16:
        meta["levels"] = levels
    if sbits:  # the LSTMs' and SVDFs' bits (the kept ones: 8)
        meta["stateful_bits"] = {k: (sbits[k] if k in redone else 8) for k in sbits}
    if state == "carry":  # only then: a reset model's meta and hash are unchanged
        meta["state"] = state
    qm = QuantModel(graph=graph, act=act, weights=weights, params=params, method=method, meta=meta,
                    source=graph.source_tflite)
    if state == "carry":  # a carried state reaches sums a reset one cannot (validate.check_svdf): refused now
        from ..validate import check_model

        check_model(qm)
    return qm
