"""The NumPy integer reference: exactly the numeric contract of docs/numerics.md.

Every tensor is int8 (held in wider NumPy ints); conv/linear accumulate in int32 (exactly: the
products are summed in float64, where every partial sum of these integers is exact, then checked
against the proven bound); requantization is TFLite's MultiplyByQuantizedMultiplier.
"""
from __future__ import annotations

import math

import numpy as np

from .. import moves
from ..intparams import IntAdd, IntClamp, IntLayer, IntMean, IntMul
from ..layout import from_device, to_device
from ..ir import TABLE_OPS, Node
from ..quant.power import round_half_away
from .fixedpoint import INT32_MAX, multiply_by_quantized_multiplier
from . import lstm as lstm_ref
from . import svdf as svdf_ref
from .softmax import softmax_int8


def quantize_input(x: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    """float → int8 with round half away from zero (the host side of the model's input)."""
    return np.clip(round_half_away(np.asarray(x, np.float64) / scale) + zero_point, -128, 127).astype(np.int8)


def dequantize_output(q: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    return (q.astype(np.float64) - zero_point) * scale


def _requant(acc: np.ndarray, p: IntLayer, ch_axis: int) -> np.ndarray:
    shape = [1] * acc.ndim
    shape[ch_axis] = -1
    out = multiply_by_quantized_multiplier(acc, p.mult.reshape(shape), p.shift.reshape(shape)) + p.out_zp
    return np.clip(out, p.act_min, p.act_max)


def _check_bound(acc: np.ndarray, p: IntLayer, ch_axis: int, name: str) -> None:
    shape = [1] * acc.ndim
    shape[ch_axis] = -1
    if p.acc_bound.max(initial=0) > INT32_MAX or np.any(np.abs(acc) > p.acc_bound.reshape(shape)):
        raise AssertionError(f"layer '{name}': accumulator exceeds its proven int32 bound")


def _windows(x: np.ndarray, kh: int, kw: int, sh: int, sw: int) -> np.ndarray:
    """(N, C, H, W) → (N, C, OH, OW, kh, kw) view of the sliding windows."""
    v = np.lib.stride_tricks.sliding_window_view(x, (kh, kw), axis=(2, 3))
    return v[:, :, ::sh, ::sw]


def conv2d(x: np.ndarray, node: Node, p: IntLayer) -> np.ndarray:
    pt, pl, pb, pr = node.attrs["pads"]
    sh, sw = node.attrs["stride"]
    xs = np.pad(x.astype(np.int64) - p.in_zp, ((0, 0), (0, 0), (pt, pb), (pl, pr)))  # padding is real 0
    w = p.levels().astype(np.float64)
    o, ig, kh, kw = w.shape
    win = _windows(xs.astype(np.float64), kh, kw, sh, sw)
    if node.attrs["groups"] == 1:
        acc = np.einsum("nchwij,ocij->nohw", win, w, optimize=True)
    else:  # depthwise: output channel o reads input channel o // multiplier
        mult = o // x.shape[1]
        win = np.repeat(win, mult, axis=1) if mult > 1 else win
        acc = np.einsum("nohwij,oij->nohw", win, w[:, 0], optimize=True)
    acc = np.rint(acc).astype(np.int64) + p.bias.astype(np.int64).reshape(1, -1, 1, 1)
    _check_bound(acc, p, 1, node.name)
    return _requant(acc, p, 1)


def linear(x: np.ndarray, node: Node, p: IntLayer) -> np.ndarray:
    xs = (x.astype(np.int64) - p.in_zp).astype(np.float64)
    acc = np.rint(xs @ p.levels().astype(np.float64).T).astype(np.int64) + p.bias.astype(np.int64)
    _check_bound(acc, p, 1, node.name)
    return _requant(acc, p, 1)


def add(x1: np.ndarray, x2: np.ndarray, p: IntAdd) -> np.ndarray:
    def scaled(x, zp, m, s):
        return multiply_by_quantized_multiplier((x.astype(np.int64) - zp) * (1 << p.left_shift), m, s)

    raw = scaled(x1, p.in1_zp, p.in1_mult, p.in1_shift) + scaled(x2, p.in2_zp, p.in2_mult, p.in2_shift)
    out = multiply_by_quantized_multiplier(raw, p.out_mult, p.out_shift) + p.out_zp
    return np.clip(out, p.act_min, p.act_max)


def maxpool2d(x: np.ndarray, node: Node, p: IntClamp) -> np.ndarray:
    pt, pl, pb, pr = node.attrs["pads"]
    xp = np.pad(x, ((0, 0), (0, 0), (pt, pb), (pl, pr)), constant_values=-128)
    out = _windows(xp, *node.attrs["kernel"], *node.attrs["stride"]).max(axis=(4, 5))
    return np.clip(out, p.lo, p.hi)


def _rounded_mean(total: np.ndarray, count: int) -> np.ndarray:
    """TFLite's integer average: round half away from zero, C division."""
    half = count // 2
    pos = (total + half) // count
    neg = -((-(total - half)) // count)
    return np.where(total > 0, pos, neg)


def avgpool2d(x: np.ndarray, node: Node, p: IntClamp) -> np.ndarray:
    kh, kw = node.attrs["kernel"]
    total = _windows(x.astype(np.int64), kh, kw, *node.attrs["stride"]).sum(axis=(4, 5))
    return np.clip(_rounded_mean(total, kh * kw), p.lo, p.hi)


def global_avgpool(x: np.ndarray, p: IntClamp) -> np.ndarray:
    total = x.astype(np.int64).sum(axis=(2, 3), keepdims=True)
    return np.clip(_rounded_mean(total, x.shape[2] * x.shape[3]), p.lo, p.hi)


def mul(x1: np.ndarray, x2: np.ndarray, p: IntMul) -> np.ndarray:
    """TFLite Micro's int8 MUL (reference_integer_ops::MulElementwise / BroadcastMul): a C x 1 x 1
    operand broadcasts over H and W as numpy broadcasts it."""
    prod = (x1.astype(np.int64) - p.in1_zp) * (x2.astype(np.int64) - p.in2_zp)
    return np.clip(multiply_by_quantized_multiplier(prod, p.mult, p.shift) + p.out_zp, p.act_min, p.act_max)


def mean(x: np.ndarray, p: IntMean) -> np.ndarray:
    """TFLite Micro's int8 MEAN over H and W (reference_ops::QuantizedMeanOrSum)."""
    shifted = x.astype(np.int64).sum(axis=(2, 3), keepdims=True) - p.in_zp * p.count
    return np.clip(multiply_by_quantized_multiplier(shifted, p.mult, p.shift) + p.out_zp, -128, 127)


def reshape(x: np.ndarray, shape) -> np.ndarray:
    """The same bytes in the device's order (H, W, C for a C×H×W tensor), another shape."""
    return from_device(to_device(x), tuple(shape))


def copy(xs: list[np.ndarray], node, zero_point: int = 0) -> np.ndarray:
    """TRANSPOSE, STRIDED_SLICE, PACK, ...: the node's byte moves over the device order; a zero
    insertion (fill) holds the zero point where no move writes."""
    shape = tuple(node.attrs["shape"])
    fill = zero_point if node.attrs.get("fill", False) else None
    return from_device(moves.apply_moves([to_device(x) for x in xs], node.attrs["moves"], math.prod(shape), fill), shape)


def reduce_max(x: np.ndarray, node) -> np.ndarray:
    """TFLite Micro's int8 REDUCE_MAX: the largest code (input and output share the scale)."""
    shape = tuple(node.attrs["shape"])
    flat = to_device(x)
    pos = moves.reduce_positions(node.attrs["reduce"], flat.shape[1], math.prod(shape))
    return from_device(flat[:, pos].max(axis=2), shape)


def mean_reduce(x: np.ndarray, node, p: IntMean) -> np.ndarray:
    """TFLite Micro's int8 MEAN over any axes (reference_ops::QuantizedMeanOrSum): each output's codes
    summed, less count x the input zero point, rescaled, plus the output zero point."""
    shape = tuple(node.attrs["shape"])
    flat = to_device(x)
    pos = moves.reduce_positions(node.attrs["reduce"], flat.shape[1], math.prod(shape))
    shifted = flat[:, pos].astype(np.int64).sum(axis=2) - p.in_zp * p.count
    y = np.clip(multiply_by_quantized_multiplier(shifted, p.mult, p.shift) + p.out_zp, -128, 127)
    return from_device(y, shape)


def run_int(qm, xq: np.ndarray, record=None, chunk: int = 64) -> np.ndarray:
    """Run the integer model on int8 inputs (N, *input_shape); returns int8 outputs. A model whose
    state mode is "carry" (nupes_edge/state.py) takes the N inputs as one sequence: row by row from
    the reset state, each stateful node continuing from its state after the previous row."""
    from ..state import carries

    if carries(qm):
        state: dict = {}
        outs = [_run(qm, np.asarray(xq)[i:i + 1], record, state) for i in range(len(xq))]
        return np.concatenate(outs) if outs else _run(qm, np.asarray(xq), record, None)
    if len(xq) > chunk and record is None:  # bounded memory: the im2col views grow with N
        return np.concatenate([run_int(qm, xq[i:i + chunk]) for i in range(0, len(xq), chunk)])
    return _run(qm, xq, record, None)


def _run(qm, xq: np.ndarray, record, state: dict | None) -> np.ndarray:
    """One pass over the graph. ``state`` None: every stateful node from the reset state; else a dict
    (node name -> its state) read for each stateful node's start (absent: the reset state) and
    updated with its final state (rows of xq: one sequence each, so carry passes one row)."""
    g = qm.graph
    env = {g.input_name: np.asarray(xq, np.int64)}
    for node in g.nodes:
        xs = [env[t] for t in node.inputs]
        p = qm.params.get(node.name)
        if node.op == "conv2d":
            y = conv2d(xs[0], node, p)
        elif node.op == "linear":
            y = linear(xs[0], node, p)
        elif node.op == "add":
            y = add(xs[0], xs[1], p)
        elif node.op == "maxpool2d":
            y = maxpool2d(xs[0], node, p)
        elif node.op == "avgpool2d":
            y = avgpool2d(xs[0], node, p)
        elif node.op == "global_avgpool":
            y = global_avgpool(xs[0], p)
        elif node.op in ("relu", "relu6", "clamp"):
            y = np.clip(xs[0], p.lo, p.hi)
        elif node.op == "maximum":  # TFLite Micro's int8 MAXIMUM / MINIMUM: on the codes
            y = np.maximum(xs[0], xs[1])
        elif node.op == "minimum":
            y = np.minimum(xs[0], xs[1])
        elif node.op == "mean":
            y = mean(xs[0], p)
        elif node.op == "mul":
            y = mul(xs[0], xs[1], p)
        elif node.op == "flatten":
            y = xs[0].reshape(xs[0].shape[0], -1)
        elif node.op == "reshape":
            y = reshape(xs[0], node.attrs["shape"])
        elif node.op == "concat":
            y = np.concatenate(xs, axis=1)
        elif node.op == "copy":
            y = copy(xs, node, qm.act[node.inputs[0]].zero_point)
        elif node.op == "reduce_max":
            y = reduce_max(xs[0], node)
        elif node.op == "mean_reduce":
            y = mean_reduce(xs[0], node, p)
        elif node.op in TABLE_OPS:
            y = np.asarray(p.table, np.int64)[xs[0] + 128]
        elif node.op == "lstm":  # (N, F, 1, T) -> (N, T, F) sequences -> (N, S, 1, T)
            seq = xs[0][:, :, 0, :].transpose(0, 2, 1)
            if state is None:
                y = lstm_ref.lstm(seq, p)
            else:
                y, h, c = lstm_ref.lstm_from(seq, p, *state.get(node.name, lstm_ref.reset_state(p, len(seq))))
                state[node.name] = (h, c)
            y = y.transpose(0, 2, 1)[:, :, None, :]
        elif node.op == "svdf":  # (N, I) -> (N, U), from the reset state or the carried one
            if state is None:
                y = svdf_ref.svdf(xs[0], p)
            else:
                y, state[node.name] = svdf_ref.svdf_step(xs[0], state.get(node.name, svdf_ref.reset_state(p, len(xs[0]))), p)
        elif node.op == "softmax":
            y = softmax_int8(xs[0].astype(np.int8), p.input_mult, p.input_left_shift, p.diff_min).astype(np.int64)
        else:  # pragma: no cover - infer_shapes rejects unknown ops
            raise ValueError(node.op)
        env[node.output] = y
        if record is not None:
            record(node.output, y)
    return env[g.output_name].astype(np.int8)
