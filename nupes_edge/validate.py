"""The integer parameters of a model, checked: types, ranges, shapes, and the accumulator bound
recomputed. A model file is untrusted input: artifact.load runs these before anything uses the
model, and the code generator runs them again before it writes a number into C."""
from __future__ import annotations

import math

import numpy as np

from .errors import NupesError
from .intparams import IntAdd, IntClamp, IntLayer, IntLstm, IntMean, IntMul, IntSoftmax, IntSvdf, IntTable
from .ir import TABLE_OPS
from .packing import unpack_rows

INT32 = (-(1 << 31), (1 << 31) - 1)


def c_int(value, lo: int, hi: int, what: str) -> int:
    """``value`` as a Python int in [lo, hi], or a NupesError naming ``what``."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise NupesError(f"{what}: expected an integer, got {type(value).__name__} {str(value)[:40]!r}")
    v = int(value)
    if not lo <= v <= hi:
        raise NupesError(f"{what}: {v} is outside [{lo}, {hi}]")
    return v


def c_ints(values: np.ndarray, lo: int, hi: int, what: str) -> np.ndarray:
    """An integer array whose every element lies in [lo, hi], as int64."""
    a = np.asarray(values)
    if a.dtype.kind not in "iu":
        raise NupesError(f"{what}: expected an integer array, got dtype {a.dtype}")
    a = a.astype(np.int64)
    if a.size and (a.min() < lo or a.max() > hi):
        raise NupesError(f"{what}: values outside [{lo}, {hi}] (min {a.min()}, max {a.max()})")
    return a


def params_of(node, p, cls):
    if not isinstance(p, cls):
        raise NupesError(f"layer '{node.name}' [{node.op}]: integer parameters missing or of the wrong kind "
                         f"({type(p).__name__}, expected {cls.__name__})")
    return p


def clamp_bounds(node, p) -> tuple[int, int]:
    p = params_of(node, p, IntClamp)
    lo, hi = (c_int(v, -128, 127, f"layer '{node.name}': clamp bound") for v in (p.lo, p.hi))
    if lo > hi:
        raise NupesError(f"layer '{node.name}': clamp bounds [{lo}, {hi}] are empty")
    return lo, hi


def check_layer(node, p: IntLayer) -> None:
    """The integer parameters of a weight layer, in the types and ranges the C declares."""
    what = f"layer '{node.name}'"
    params_of(node, p, IntLayer)
    bits = c_int(p.bits, 2, 8, f"{what}: bits")
    c_ints(p.lut, 0, (1 << 15) - 1, f"{what}: lut")
    if np.asarray(p.lut).shape != (1 << (bits - 1),):
        raise NupesError(f"{what}: lut has {np.asarray(p.lut).size} entries, {bits}-bit codes need {1 << (bits - 1)}")
    c_ints(p.packed, 0, 255, f"{what}: packed codes")
    w_shape = tuple(node.weight.shape)
    k = math.prod(w_shape[1:])
    if tuple(np.asarray(p.weight_shape).tolist()) != w_shape or np.asarray(p.packed).shape != (w_shape[0], (k * bits + 7) // 8):
        raise NupesError(f"{what}: packed codes of shape {np.asarray(p.packed).shape} do not fit a {list(w_shape)} "
                         f"weight at {bits} bits")
    rows = np.asarray(p.bias).shape
    for arr, lo, hi, label in ((p.bias, *INT32, "bias"), (p.mult, 0, INT32[1], "mult"), (p.shift, -31, 30, "shift")):
        c_ints(arr, lo, hi, f"{what}: {label}")
        if np.asarray(arr).shape != rows or rows != (int(np.asarray(p.packed).shape[0]),):
            raise NupesError(f"{what}: {label} has shape {np.asarray(arr).shape}, expected one per output channel")
    for v, label in ((p.in_zp, "in_zp"), (p.out_zp, "out_zp"), (p.act_min, "act_min"), (p.act_max, "act_max")):
        c_int(v, -128, 127, f"{what}: {label}")
    c_int(p.G, 0, 16, f"{what}: G")
    # the accumulator bound, recomputed from the codes, table and bias (not trusted from the file)
    levels = np.abs(np.asarray(p.lut, np.int64)[np.abs(unpack_rows(np.asarray(p.packed), bits, k).astype(np.int64))])
    x_max = max(128 + int(p.in_zp), 127 - int(p.in_zp))
    bound = levels.sum(axis=1) * x_max + np.abs(np.asarray(p.bias, np.int64))
    if bound.max(initial=0) > INT32[1]:
        raise NupesError(f"{what}: the int32 accumulator can overflow (worst case {int(bound.max())})")
    stored = np.asarray(p.acc_bound)
    if stored.shape != bound.shape or stored.dtype.kind not in "iu" or not np.array_equal(stored.astype(np.int64), bound):
        raise NupesError(f"{what}: acc_bound does not match the codes, table and bias")
    if not (isinstance(p.a, (int, float, np.floating)) and 0 < float(p.a) < 100):
        raise NupesError(f"{what}: exponent a = {str(p.a)[:40]!r} is not a number in (0, 100)")


def check_add(node, p: IntAdd) -> None:
    what = f"layer '{node.name}'"
    params_of(node, p, IntAdd)
    for f in ("in1_zp", "in2_zp", "out_zp", "act_min", "act_max"):
        c_int(getattr(p, f), -128, 127, f"{what}: {f}")
    for f in ("in1_mult", "in2_mult", "out_mult"):
        c_int(getattr(p, f), 0, INT32[1], f"{what}: {f}")
    for f in ("in1_shift", "in2_shift", "out_shift"):
        c_int(getattr(p, f), -31, 30, f"{what}: {f}")
    c_int(p.left_shift, 0, 30, f"{what}: left_shift")




def check_mul(node, p) -> IntMul:
    """A MUL's parameters, in the ranges its C kernel (nupes_mul_s8) computes without overflow."""
    what = f"layer '{node.name}'"
    params_of(node, p, IntMul)
    for f in ("in1_zp", "in2_zp", "out_zp", "act_min", "act_max"):
        c_int(getattr(p, f), -128, 127, f"{what}: {f}")
    c_int(p.mult, 0, INT32[1], f"{what}: mult")
    shift = c_int(p.shift, -31, 30, f"{what}: shift")
    if shift > 0 and (256 * 256) << shift > INT32[1]:
        raise NupesError(f"{what}: a left shift of {shift} overflows int32 on a product of two int8 values")
    if p.act_min > p.act_max:
        raise NupesError(f"{what}: clamp bounds [{p.act_min}, {p.act_max}] are empty")
    return p


def check_mean(node, p, count: int) -> IntMean:
    """A MEAN's parameters, in the ranges its C kernel (nupes_mean_s8) computes without overflow."""
    what = f"layer '{node.name}'"
    params_of(node, p, IntMean)
    c_int(p.mult, 0, INT32[1], f"{what}: mult")
    shift = c_int(p.shift, -31, 30, f"{what}: shift")
    c_int(p.in_zp, -128, 127, f"{what}: in_zp")
    c_int(p.out_zp, -128, 127, f"{what}: out_zp")
    if c_int(p.count, 1, 1 << 24, f"{what}: count") != count:
        raise NupesError(f"{what}: count {p.count} is not the {count} values it averages")
    if shift > 0 and (255 * count) << shift > INT32[1]:
        raise NupesError(f"{what}: a left shift of {shift} overflows int32 on a sum of {count} values")
    return p


def check_softmax(node, p, out_q) -> tuple[int, int, int]:
    """A softmax's parameters, in the ranges TFLite Micro's Prepare can give (nupes_softmax_s8)."""
    if not isinstance(p, IntSoftmax):
        raise NupesError(f"layer '{node.name}': softmax parameters missing or of the wrong kind")
    if out_q is None or (out_q.scale, out_q.zero_point) != (1.0 / 256, -128):
        raise NupesError(f"layer '{node.name}': a softmax output must have scale 1/256 and zero point -128")
    return (c_int(p.input_mult, 0, INT32[1], f"layer '{node.name}': input_mult"),
            c_int(p.input_left_shift, 0, 31, f"layer '{node.name}': input_left_shift"),
            c_int(p.diff_min, INT32[0], 0, f"layer '{node.name}': diff_min"))


def check_concat(node, act: dict) -> None:
    """A concatenation copies bytes: its inputs must be quantized as its output is."""
    out = act.get(node.output)
    for t in node.inputs:
        q = act.get(t)
        if q is None or out is None or (q.scale, q.zero_point) != (out.scale, out.zero_point):
            raise NupesError(f"layer '{node.name}': input '{t}' is quantized differently from the {node.op}'s "
                             "output; it copies or compares int8 codes, so all need one quantization (as TFLite's does)")


def check_table(node, p) -> np.ndarray:
    """An elementwise activation's 256 int8 outputs."""
    if not isinstance(p, IntTable):
        raise NupesError(f"layer '{node.name}': its activation table is missing or of the wrong kind")
    t = c_ints(p.table, -128, 127, f"layer '{node.name}': table")
    if t.shape != (256,):
        raise NupesError(f"layer '{node.name}': an activation table has 256 entries, not {t.size}")
    return t


def check_lstm(node, p, in_shape, out_shape) -> None:
    """An int8 LSTM's parameters, in the types and ranges its C kernel (nupes_lstm_s8) computes without
    overflow: every gate's int32 sum, shifted left, stays in int32; the int16 products stay in int32."""
    what = f"layer '{node.name}'"
    p = params_of(node, p, IntLstm)
    f, s = in_shape[0], out_shape[0]
    w_in = c_ints(p.w_in, -128, 127, f"{what}: input weights")
    w_rec = c_ints(p.w_rec, -128, 127, f"{what}: recurrent weights")
    bias = c_ints(p.bias, *INT32, f"{what}: bias")
    if w_in.shape != (4, s, f) or w_rec.shape != (4, s, s) or bias.shape != (4, s):
        raise NupesError(f"{what}: weights {w_in.shape}, {w_rec.shape} and bias {bias.shape} do not fit {f} "
                         f"inputs and {s} units")
    mult = c_ints(p.fc_mult, 0, INT32[1], f"{what}: FC multipliers")
    shift = c_ints(p.fc_shift, -31, 30, f"{what}: FC shifts")
    if mult.shape != (2, 4) or shift.shape != (2, 4):
        raise NupesError(f"{what}: FC multipliers and shifts are 2 x 4")
    in_zp = c_int(p.in_zp, -128, 127, f"{what}: input zero point")
    hid_zp = c_int(p.hid_zp, -128, 127, f"{what}: hidden zero point")
    for g in range(4):
        for j, (w, zp, b) in enumerate(((w_in[g], in_zp, bias[g]), (w_rec[g], hid_zp, np.zeros_like(bias[g])))):
            bound = int((np.abs(w).sum(axis=1) * max(128 + zp, 127 - zp) + np.abs(b)).max(initial=0))
            if bound << max(int(shift[j, g]), 0) > INT32[1]:
                raise NupesError(f"{what}: gate {g}'s {'input' if j == 0 else 'recurrent'} sum can overflow int32")
    for name in ("cell", "gate", "hid"):
        c_int(getattr(p, f"{name}_mult"), 0, INT32[1], f"{what}: {name} multiplier")
        c_int(getattr(p, f"{name}_shift"), -31, 0, f"{what}: {name} shift")
    c_int(p.tanh_mult, 1, 0xFFFF, f"{what}: tanh multiplier")
    c_int(p.tanh_shift, 0, 30, f"{what}: tanh shift")
    c_int(p.cell_clip, 0, (1 << 15) - 1, f"{what}: cell clip")
    if p.cell_act not in ("tanh", "sigmoid"):
        raise NupesError(f"{what}: cell gate activation {str(p.cell_act)[:20]!r} (tanh or sigmoid)")
    scales = np.asarray(p.w_scales)
    if scales.dtype.kind != "f" or scales.shape != (8,) or not (np.isfinite(scales).all() and (scales > 0).all()) \
            or not (isinstance(p.cell_scale, float) and math.isfinite(p.cell_scale) and p.cell_scale > 0):
        raise NupesError(f"{what}: weight scales and the cell state's scale must be 8 + 1 positive finite numbers")


def check_svdf(node, p, in_shape, out_shape, carry: bool = False) -> None:
    """An int8 SVDF's parameters, in the types and ranges its C kernel (nupes_svdf_s8) computes without
    overflow from the reset state: each filter's int32 feature sum and each unit's int32 sum (the bias and
    rank newest time weights x a state value less its zero point), shifted left, stay in int32. ``carry``
    (a model whose state is carried, nupes_edge/state.py): every state value may be off its zero point, so
    a unit's sum is bounded over all of its filters' time weights (TFLite Micro sums them in int32 too:
    a file whose sums can overflow has no defined result)."""
    what = f"layer '{node.name}'"
    p = params_of(node, p, IntSvdf)
    if len(in_shape) != 1 or len(out_shape) != 1:
        raise NupesError(f"{what}: an SVDF maps a vector to a vector (got {list(in_shape)} -> {list(out_shape)})")
    n_in, units = in_shape[0], out_shape[0]
    rank = c_int(p.rank, 1, 1 << 16, f"{what}: rank")
    bits = c_int(p.state_bits, 8, 16, f"{what}: state bits")
    if bits not in (8, 16):
        raise NupesError(f"{what}: the activation state is int8 or int16 (got {bits} bits)")
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    wf = c_ints(p.w_feature, -128, 127, f"{what}: feature weights")
    wt = c_ints(p.w_time, lo, hi, f"{what}: time weights")
    bias = c_ints(p.bias, *INT32, f"{what}: bias")
    if wf.shape != (units * rank, n_in) or wt.ndim != 2 or wt.shape[0] != units * rank or not 1 <= wt.shape[1] <= 1 << 20 \
            or bias.shape != (units,):
        raise NupesError(f"{what}: feature weights {wf.shape}, time weights {wt.shape} and bias {bias.shape} do not "
                         f"fit {n_in} inputs, {units} units and rank {rank}")
    in_zp = c_int(p.in_zp, -128, 127, f"{what}: input zero point")
    c_int(p.out_zp, -128, 127, f"{what}: output zero point")
    state_zp = c_int(p.state_zp, lo, hi if bits == 8 else 0, f"{what}: state zero point")
    if bits == 16 and state_zp != 0:
        raise NupesError(f"{what}: an int16 state has zero point 0")
    for j in (1, 2):
        c_int(getattr(p, f"mult{j}"), 0, INT32[1], f"{what}: multiplier {j}")
        c_int(getattr(p, f"shift{j}"), -31, 30, f"{what}: shift {j}")
    feature = int((np.abs(wf).sum(axis=1) * max(128 + in_zp, 127 - in_zp)).max(initial=0))
    if feature << max(int(p.shift1), 0) > INT32[1]:
        raise NupesError(f"{what}: a filter's feature sum can overflow int32")
    # |state value - zero point| per filter: an int8 state may wrap anywhere in its range; an int16 one (zero
    # point 0) holds the requantized feature sum, whose size the feature sum's bound limits (+1: rounding)
    from .intref.fixedpoint import multiply_by_quantized_multiplier

    span = np.full(wf.shape[0], max(state_zp - lo, hi - state_zp), np.int64)
    if bits == 16:
        sums = np.abs(wf).sum(axis=1) * max(128 + in_zp, 127 - in_zp)
        span = np.minimum(span, multiply_by_quantized_multiplier(sums, int(p.mult1), int(p.shift1)) + 1)
    weights = np.abs(wt).sum(axis=1) if carry else np.abs(wt[:, -1])
    unit = int(((weights * span).reshape(units, rank).sum(axis=1) + np.abs(bias)).max(initial=0))
    if unit << max(int(p.shift2), 0) > INT32[1]:
        raise NupesError(f"{what}: a unit's sum over its time weights can overflow int32"
                         + (" when the state is carried (--state carry: every state value may be off its zero "
                            "point)" if carry else ""))
    scales = [getattr(p, f) for f in ("feature_scale", "time_scale", "state_scale")]
    if not all(isinstance(v, float) and math.isfinite(v) and v > 0 for v in scales):
        raise NupesError(f"{what}: the feature, time and state scales must be positive finite numbers")


MAX_TENSOR_ELEMENTS = 1 << 24  # 16 MB of int8: far beyond any microcontroller's RAM


def check_model(qm) -> None:
    """Every node's integer parameters, as the integer reference and the C runtime need them."""
    from .state import carries

    for tensor, shape in qm.graph.shapes.items():
        if math.prod(shape) > MAX_TENSOR_ELEMENTS or min(shape, default=1) < 1:
            raise NupesError(f"tensor '{tensor}': shape {list(shape)[:8]} is empty or larger than "
                             f"{MAX_TENSOR_ELEMENTS:,} elements")
    for node in qm.graph.nodes:
        p = qm.params.get(node.name)
        if node.op in ("conv2d", "linear"):
            check_layer(node, p)
        elif node.op == "add":
            check_add(node, p)
        elif node.op == "softmax":
            check_softmax(node, p, qm.act.get(node.output))
        elif node.op in TABLE_OPS:
            check_table(node, p)
        elif node.op == "concat":
            check_concat(node, qm.act)
        elif node.op == "mul":
            check_mul(node, p)
        elif node.op == "lstm":
            check_lstm(node, p, qm.graph.shapes[node.inputs[0]], qm.graph.shapes[node.output])
        elif node.op == "svdf":
            check_svdf(node, p, qm.graph.shapes[node.inputs[0]], qm.graph.shapes[node.output], carries(qm))
        elif node.op == "mean":
            _, h, w = qm.graph.shapes[node.inputs[0]]
            check_mean(node, p, h * w)
        elif node.op == "mean_reduce":
            from .moves import reduce_count

            check_mean(node, p, reduce_count(node.attrs["reduce"]))
        elif node.op in ("maxpool2d", "avgpool2d", "global_avgpool", "relu", "relu6", "clamp"):
            clamp_bounds(node, p)
        elif node.op in ("maximum", "minimum"):
            check_concat(node, qm.act)
