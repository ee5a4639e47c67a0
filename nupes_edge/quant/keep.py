"""An int8 .tflite's own quantization, kept.

TFLite's int8 arithmetic is the numeric contract's special case a = 1, G = 0 (docs/numerics.md),
so a file's activation scales and zero points, int8 weights, float32 weight scales and int32 biases
can be carried over as they are: the multipliers lowered from them are the ones TFLite Micro
computes, and the integer model is then the file's model, bit for bit. Re-quantizing the weights
(other widths or methods) keeps the activation quantization and needs no calibration data.
"""
from __future__ import annotations

import numpy as np

from ..errors import NupesError
from ..ir import Graph
from .types import ActQuant, LayerWeights

QMAX8 = 127


def kept_activations(graph: Graph) -> dict[str, ActQuant]:
    fq = graph.file_quant
    act = dict(fq.act)
    for n in graph.nodes:
        if n.op == "softmax":
            act[n.output] = fq.softmax_out or (1.0 / 256, -128)
    missing = [t for t in graph.shapes if t not in act]
    if missing:
        raise NupesError(f"tensor '{missing[0]}' has no int8 quantization in the file, so the file's "
                         "quantization cannot be kept; quantize it again from data with --recalibrate")
    return {t: ActQuant(float(act[t][0]), int(act[t][1])) for t in graph.shapes}


def check_keepable(graph: Graph) -> None:
    fq = graph.file_quant
    if fq.conflicts:
        raise NupesError(f"the file's quantization cannot be kept exactly: {fq.conflicts[0]}; "
                         "quantize it again from data with --recalibrate")
    missing = [n.name for n in graph.weight_nodes() if n.name not in fq.layers]
    if missing:
        raise NupesError(f"layer '{missing[0]}' has no int8 weights in the file; quantize it again from data "
                         "with --recalibrate")


def kept_weights(graph: Graph, act: dict[str, ActQuant]) -> dict[str, LayerWeights]:
    """Every layer's int8 weights as stored: 8 bits, a = 1, alpha = 127 x the float32 scale (so the
    scale the lowering derives is the file's, exactly), and a float bias that rounds back to the
    file's int32 bias."""
    out = {}
    for n in graph.weight_nodes():
        codes, scales, bias = graph.file_quant.layers[n.name]
        if codes.min() < -QMAX8:
            raise NupesError(f"layer '{n.name}': an int8 weight of -128 cannot be kept (weight codes are "
                             "symmetric, -127..127, as TFLite's converter writes them); use --recalibrate")
        s_in = act[n.inputs[0]].scale
        s_w = scales.astype(np.float64)
        out[n.name] = LayerWeights(bits=8, a=1.0, alpha=s_w * QMAX8, codes=codes.astype(np.int8).copy(),
                                   bias=bias.astype(np.float64) * (s_in * s_w))
    return out


def check_kept(graph: Graph, params: dict) -> None:
    """The lowered integer layers hold the file's biases (a bias past 2^30 would have been floored)."""
    for name, (_, _, bias) in graph.file_quant.layers.items():
        got = np.asarray(params[name].bias, np.int64)
        if not np.array_equal(got, bias):
            c = int(np.nonzero(got != bias)[0][0])
            raise NupesError(f"layer '{name}': channel {c}'s int32 bias {int(bias[c])} could not be kept "
                             f"(lowered to {int(got[c])}); use --recalibrate")


def describe(graph: Graph, weights_kept: bool, method: str = "uniform", requantized: dict | None = None) -> dict:
    """What a quantized model took from its file; ``requantized``: the LSTMs and SVDFs whose weights the
    method re-quantized, with their bits (the others keep the file's)."""
    fq = graph.file_quant
    requantized = requantized or {}
    out = {"activations": f"scales and zero points of {len(fq.act)} tensors",
           "weights": (f"int8 weights, float32 scales and int32 biases of {len(fq.layers)} layers"
                       if weights_kept else "re-quantized (not from the file)")}
    for key, kind, kept_what, state in (
            ("lstm", "LSTM", "int8 weights, int32 biases and the int16 cell state", "the int16 cell state's scale"),
            ("svdf", "SVDF", "int8 feature weights, time weights, int32 biases and the activation state's quantization",
             "the activation state's quantization")):
        names = sorted(getattr(fq, f"{key}s"))
        redone = [n for n in names if n in requantized]
        parts = []
        if len(redone) < len(names):
            k = len(names) - len(redone)
            parts.append(f"{kept_what} of {k} {kind}{'s' if k > 1 else ''}, kept as stored")
        if redone:
            bits = "/".join(str(b) for b in sorted({requantized[n] for n in redone}))
            parts.append(f"{state} of {len(redone)} {kind}{'s' if len(redone) > 1 else ''} kept; their weights "
                         f"re-quantized with {method} to {bits}-bit levels, stored as the kernel reads them "
                         "(quant/stateful.py)")
        if parts:
            out[key] = "; ".join(parts)
    return out
