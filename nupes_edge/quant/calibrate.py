"""Activation calibration: per-tensor min/max on the float model → int8 asymmetric (scale, zp)."""
from __future__ import annotations


import numpy as np
import torch

from .. import torch_exec
from ..ir import Graph
from ..progress import bar as progress_bar
from .power import round_half_away
from .types import ActQuant

# Ops whose int8 output must reuse the input's quantization (as in TFLite): they only move,
# select or average values, never change their range.
SAME_QUANT_OPS = ("maxpool2d", "avgpool2d", "global_avgpool", "flatten", "reshape", "relu", "relu6", "reduce_max",
                  "clamp")
# Ops that copy bytes from several inputs (or one): all of them share one quantization
SHARED_QUANT_OPS = ("concat", "copy", "maximum", "minimum")
# Softmax probabilities in [0, 1): TFLite's fixed int8 quantization
SOFTMAX_OUT = ActQuant(1.0 / 256, -128)
# TFLite's fixed int8 output quantization of the bounded activations (sigmoid in [0, 1), tanh in (-1, 1))
FIXED_OUT = {"sigmoid": ActQuant(1.0 / 256, -128), "tanh": ActQuant(1.0 / 128, 0)}


def act_quant_from_range(lo: float, hi: float) -> ActQuant:
    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    if hi - lo <= 0:
        return ActQuant(1.0, 0)
    scale = float(np.float32((hi - lo) / 255.0))  # float32, as a .tflite file stores it
    zp = int(np.clip(round_half_away(-128 - lo / scale), -128, 127))
    return ActQuant(scale, zp)


def _share_concat_ranges(graph: Graph, lo: dict, hi: dict) -> None:
    """A concatenation copies bytes, so its inputs and output need one quantization (as TFLite
    requires): every tensor linked to a concat, directly or through ops that keep their input's
    quantization, gets the union of the group's ranges."""
    parent = {t: t for t in lo}

    def root(t):
        while parent[t] != t:
            parent[t] = parent[parent[t]]
            t = parent[t]
        return t

    linked = False
    for node in graph.nodes:
        if node.op in SHARED_QUANT_OPS or node.op in SAME_QUANT_OPS:
            for t in node.inputs:
                parent[root(t)] = root(node.output)
            linked |= node.op in SHARED_QUANT_OPS
    if not linked:
        return
    group_lo: dict = {}
    group_hi: dict = {}
    for t in lo:
        r = root(t)
        group_lo[r] = min(group_lo.get(r, np.inf), lo[t])
        group_hi[r] = max(group_hi.get(r, -np.inf), hi[t])
    for t in lo:
        lo[t], hi[t] = group_lo[root(t)], group_hi[root(t)]


def calibrate(graph: Graph, x: np.ndarray, batch: int = 256, progress: bool = False) -> dict[str, ActQuant]:
    """Run the float model on calibration data and derive every tensor's quantization."""
    lo: dict[str, float] = {}
    hi: dict[str, float] = {}

    def record(name: str, t: torch.Tensor) -> None:
        lo[name] = min(lo.get(name, np.inf), float(t.min()))
        hi[name] = max(hi.get(name, -np.inf), float(t.max()))

    with torch.no_grad():
        for i in progress_bar(range(0, len(x), batch), desc="calibrating", unit="batch", enabled=progress):
            torch_exec.run(graph, torch.from_numpy(np.ascontiguousarray(x[i:i + batch], np.float32)), record=record)
    _share_concat_ranges(graph, lo, hi)
    act = {graph.input_name: act_quant_from_range(lo[graph.input_name], hi[graph.input_name])}
    for node in graph.nodes:
        if node.op in SAME_QUANT_OPS:
            act[node.output] = act[node.inputs[0]]
        elif node.op == "softmax":
            act[node.output] = SOFTMAX_OUT
        elif node.op in FIXED_OUT:
            act[node.output] = FIXED_OUT[node.op]
        elif node.op in SHARED_QUANT_OPS:  # its inputs share its range (_share_concat_ranges): the same quantization
            act[node.output] = act[node.inputs[0]]
        else:
            act[node.output] = act_quant_from_range(lo[node.output], hi[node.output])
    return act


def act_q_torch(act: dict[str, ActQuant]) -> dict[str, tuple[float, int]]:
    """The (scale, zero_point) map torch_exec.run takes for fake quantization."""
    return {k: (v.scale, v.zero_point) for k, v in act.items()}
