"""Lowering: float graph + activation quantization + quantized weights → integer parameters.

Decisions made here (and stated in docs/numerics.md):
  * table shift G: 0 when a = 1 (identity table: TFLite's int8 arithmetic); otherwise the largest
    G with L[Qmax] ≤ 32767 for which every channel's worst-case accumulator
    Σ_k |L[q_ck]| · max|x - in_zp| + |bias_c| stays ≤ 2^31 - 1 (proven here, asserted in the reference);
  * bias = round(b / (s_in · s_w,c)) with s_w,c = alpha_c / (Qmax · 2^G); where that would not
    fit in half the int32 range (a channel of (near-)zero weights, a huge bias), the channel's scale
    is floored so that it does and the channel's codes are re-encoded on the wider grid (TFLite's
    converter does the same: it raises the weight scale until the bias fits);
  * per-channel requantization multiplier M_c = s_in · s_w,c / s_out → (mult, shift), TFLite style;
  * every scale is a float32 value (as .tflite stores them) and M_c is computed from those in
    double precision, exactly as TFLite Micro does.
"""
from __future__ import annotations

import numpy as np

from ..errors import NupesError
from ..intparams import IntAdd, IntClamp, IntLayer, IntLstm, IntMean, IntMul, IntSoftmax, IntSvdf, IntTable
from ..intref.fixedpoint import INT32_MAX, quantize_multiplier
from ..intref.softmax import softmax_params
from ..ir import TABLE_OPS, Graph, Node
from ..moves import reduce_count
from ..packing import pack_rows
from .power import encode, make_lut, max_table_shift, qmax, round_half_away
from .types import ActQuant, LayerWeights

ADD_LEFT_SHIFT = 20  # TFLite's int8 ADD
BIAS_LIMIT = 1 << 30  # |int32 bias| at most half the range: the other half is the weights' sum


def act_range(act: str, q: ActQuant) -> tuple[int, int]:
    """TFLite's CalculateActivationRangeQuantized for int8."""
    lo, hi = -128, 127
    if act in ("relu", "relu6"):
        lo = max(lo, q.zero_point)
    if act == "relu6":  # in float32, like TFLite's 6.0f / scale
        hi = min(hi, q.zero_point + int(round_half_away(np.float32(6.0) / np.float32(q.scale))))
    return lo, hi


def clamp_codes(node: Node, q: ActQuant) -> IntClamp:
    """A MAXIMUM / MINIMUM with a constant as int8 bounds: the constant's code in the tensor's
    quantization (the file's own code when it shares that quantization, as TFLite Micro compares codes)."""
    def code(v, default):
        if v is None:
            return default
        return int(np.clip(round_half_away(np.float64(v) / np.float64(q.scale)) + q.zero_point, -128, 127))

    return IntClamp(code(node.attrs.get("lo"), -128), code(node.attrs.get("hi"), 127))


def layer_bias(node: Node, lw: LayerWeights) -> np.ndarray:
    return (node.bias if lw.bias is None else lw.bias).astype(np.float64)


def weight_scale(lw: LayerWeights, G: int) -> np.ndarray:
    """s_w,c = alpha_c / (Qmax · 2^G), rounded to float32: the per-channel scale a .tflite file
    stores, so requantization multipliers come out as TFLite Micro computes them."""
    return (lw.alpha / (qmax(lw.bits) * 2.0 ** G)).astype(np.float32).astype(np.float64)


def _channel_bound(levels_abs_sum: np.ndarray, x_max: int, bias: np.ndarray) -> np.ndarray:
    return levels_abs_sum.astype(np.int64) * x_max + np.abs(bias.astype(np.int64))


def floor_scales(node: Node, lw: LayerWeights, s_in: float, G: int) -> LayerWeights:
    """``lw`` with the scale of every channel whose int32 bias would exceed BIAS_LIMIT raised until it
    fits, and that channel's codes re-encoded from the float weights on the wider grid (``lw``
    itself when no channel needs it)."""
    bias = np.abs(layer_bias(node, lw))
    s_w = weight_scale(lw, G)
    need = bias / (s_in * BIAS_LIMIT)
    low = s_w < need
    if not low.any():
        return lw
    alpha = lw.alpha.astype(np.float64).copy()
    # 2^-20 of slack: the float32 rounding of the scale must not land back under the floor
    alpha[low] = need[low] * qmax(lw.bits) * 2.0 ** G * (1 + 2.0 ** -20)
    codes = lw.codes.copy()
    codes[low] = encode(node.weight[low], alpha[low], lw.a, lw.bits)
    return LayerWeights(lw.bits, lw.a, alpha, codes, lw.bias)


def lower_layer(node: Node, lw: LayerWeights, a_in: ActQuant, a_out: ActQuant, levels: int = 16) -> IntLayer:
    return lower_layer_weights(node, lw, a_in, a_out, levels=levels)[0]


def lower_layer_weights(node: Node, lw: LayerWeights, a_in: ActQuant,
                        a_out: ActQuant, kept: bool = False, levels: int = 16) -> tuple[IntLayer, LayerWeights]:
    """The layer's integer parameters, and its weights as lowered (scales floored where needed).

    ``kept``: a file's own int8 layer: its biases are kept whatever their size (TFLite Micro has no
    2^30 limit); the exact per-channel bound from these weights, bias and input range must still fit.
    ``levels``: 16, int16 table levels; 8, int8 levels times a power of two (power.make_lut) for a
    convolution whose kernel multiplies them with Helium (codegen.plan.helium_table_kernel), int16
    for every other layer."""
    x_max = max(128 + a_in.zero_point, 127 - a_in.zero_point)  # max |x - in_zp| over int8 x
    if levels != 16:
        from ..codegen.plan import helium_table_kernel

        levels = levels if helium_table_kernel(node, lw.bits) else 16
    g_candidates = [0] if lw.a == 1.0 else range(max_table_shift(lw.bits), -1, -1)
    given = lw
    for G in g_candidates:
        lut = make_lut(given.a, given.bits, G, levels)
        lw = given if kept else floor_scales(node, given, a_in.scale, G)
        mags = np.abs(lw.codes.reshape(lw.codes.shape[0], -1).astype(np.int64))
        s_w = weight_scale(lw, G)
        bias = round_half_away(layer_bias(node, lw) / (a_in.scale * s_w)).astype(np.int64)
        bound = _channel_bound(lut.astype(np.int64)[mags].sum(axis=1), x_max, bias)
        if bound.max(initial=0) <= INT32_MAX:
            break
    else:
        raise NupesError(f"layer '{node.name}': the int32 accumulator can overflow even with G = 0 "
                         f"(worst case {int(bound.max())} > 2^31 - 1); the layer's fan-in or bias is too large")
    mult, shift = zip(*(quantize_multiplier(a_in.scale * s / a_out.scale) for s in s_w))
    lo, hi = act_range(node.act, a_out)
    return IntLayer(bits=lw.bits, a=float(lw.a), G=int(G), lut=lut, packed=pack_rows(lw.codes, lw.bits),
                    weight_shape=list(lw.codes.shape),
                    bias=bias.astype(np.int32), mult=np.array(mult, np.int32), shift=np.array(shift, np.int32),
                    in_zp=a_in.zero_point, out_zp=a_out.zero_point, act_min=lo, act_max=hi, acc_bound=bound), lw


def lower_add(node: Node, a1: ActQuant, a2: ActQuant, ao: ActQuant) -> IntAdd:
    twice_max = 2 * max(a1.scale, a2.scale)
    m1, s1 = quantize_multiplier(a1.scale / twice_max)
    m2, s2 = quantize_multiplier(a2.scale / twice_max)
    mo, so = quantize_multiplier(twice_max / ((1 << ADD_LEFT_SHIFT) * ao.scale))
    lo, hi = act_range(node.act, ao)
    return IntAdd(in1_zp=a1.zero_point, in2_zp=a2.zero_point, in1_mult=m1, in1_shift=s1, in2_mult=m2,
                  in2_shift=s2, out_mult=mo, out_shift=so, left_shift=ADD_LEFT_SHIFT, out_zp=ao.zero_point,
                  act_min=lo, act_max=hi)


def lower_mul(node: Node, a1: ActQuant, a2: ActQuant, ao: ActQuant) -> IntMul:
    """TFLite Micro's mul_common.cc Prepare: the float32 scales multiplied in double."""
    real = float(np.float32(a1.scale)) * float(np.float32(a2.scale)) / float(np.float32(ao.scale))
    mult, shift = quantize_multiplier(real)
    if shift > 0 and (256 * 256) << shift > INT32_MAX:
        raise NupesError(f"layer '{node.name}' (mul): the output scale is so much finer than the inputs' that the "
                         "product overflows int32 once rescaled")
    lo, hi = act_range(node.act, ao)
    return IntMul(in1_zp=a1.zero_point, in2_zp=a2.zero_point, mult=int(mult), shift=int(shift), out_zp=ao.zero_point,
                  act_min=lo, act_max=hi)


def mean_params(count: int, s_in: float, s_out: float) -> tuple[int, int]:
    """TFLite Micro's MEAN multiplier (reduce_common.cc Prepare, reference_ops::QuantizedMeanOrSum):
    QuantizeMultiplier(s_in / s_out) in double, then 1/count folded in with a shift of
    floor(log2(count)) clamped to 32 and to 31 + shift, the multiplier divided by count truncating."""
    mult, shift = quantize_multiplier(float(np.float32(s_in)) / float(np.float32(s_out)))
    k = min(count.bit_length() - 1, 32, 31 + shift)
    if k < 0:
        raise ValueError(f"output scale {s_out} is too large for the input scale {s_in}")
    return int((mult << k) // count), int(shift - k)


def lower_mean(node: Node, count: int, a_in: ActQuant, a_out: ActQuant) -> IntMean:
    try:
        mult, shift = mean_params(count, a_in.scale, a_out.scale)
    except ValueError as e:
        raise NupesError(f"layer '{node.name}' (mean): {e}") from None
    if shift > 0 and (255 * count) << shift > INT32_MAX:
        raise NupesError(f"layer '{node.name}' (mean): the output scale is so much finer than the input's that the "
                         "sum of its inputs overflows int32 once rescaled")
    return IntMean(mult=mult, shift=shift, in_zp=a_in.zero_point, out_zp=a_out.zero_point, count=int(count))


def lower_softmax(node: Node, a_in: ActQuant, a_out: ActQuant) -> IntSoftmax:
    if (a_out.scale, a_out.zero_point) != (1.0 / 256, -128):
        raise NupesError(f"layer '{node.name}': a softmax output must be quantized with scale 1/256 and zero point "
                         f"-128 (TFLite's rule), not {a_out.scale}, {a_out.zero_point}")
    try:
        return IntSoftmax(*softmax_params(a_in.scale, node.attrs.get("beta", 1.0)))
    except ValueError as e:
        raise NupesError(f"layer '{node.name}': {e}") from None


def lower_table(node: Node, a_in: ActQuant, a_out: ActQuant) -> IntTable:
    from ..intref import lut_ops

    q = (a_in.scale, a_in.zero_point, a_out.scale, a_out.zero_point)
    try:
        if node.op == "leaky_relu":
            table = lut_ops.leaky_relu_table(float(node.attrs["alpha"]), *q)
        else:
            table = {"sigmoid": lut_ops.logistic_table, "tanh": lut_ops.tanh_table,
                     "hardswish": lut_ops.hard_swish_table, "requantize": lut_ops.requantize_table}[node.op](*q)
    except ValueError as e:
        raise NupesError(f"layer '{node.name}' ({node.op}): {e}") from None
    return IntTable(np.asarray(table, np.int8))


def lower_lstm(node: Node, graph: Graph, a_in: ActQuant, a_out: ActQuant, requant: dict | None = None) -> IntLstm:
    """An int8 LSTM with TFLite Micro's parameters (lstm_eval_common.cc). ``requant`` None: the weights,
    biases and int16 cell state of its int8 .tflite (importers/tflite_import._Reader.lstm), kept; else
    the weights quant/stateful.quantize_lstm made, the biases on their grids, and the file's cell state
    scale (a float model: quant/stateful.cell_scale_bound)."""
    from ..intref import lstm as L
    from .stateful import cell_scale_bound

    file_rec = (graph.file_quant.lstms.get(node.name) if graph.file_quant is not None else None)
    if requant is None:
        rec = file_rec
        if rec is None:
            raise NupesError(f"layer '{node.name}' (lstm): no int8 weights to keep; quantize it with a method")
        if (a_in.scale, a_in.zero_point) != tuple(rec["input"]) or \
                (a_out.scale, a_out.zero_point) != tuple(rec["hidden"]):
            raise NupesError(f"layer '{node.name}' (lstm): its input and hidden state keep the file's quantization "
                             f"{tuple(rec['input'])}, {tuple(rec['hidden'])}; --recalibrate cannot change them")
    else:
        s_w = np.asarray(requant["w_scales"][:4], np.float64)
        bias = round_half_away(np.asarray(node.bias, np.float64) / (np.float64(np.float32(a_in.scale)) * s_w[:, None]))
        if not np.all(np.abs(bias) <= INT32_MAX):  # on the floats: a huge one must not wrap in the cast
            raise NupesError(f"layer '{node.name}' (lstm): a gate's bias {np.abs(bias).max():.3g} on its input x "
                             "weight grid does not fit int32")
        steps = graph.shapes[node.inputs[0]][2]
        rec = {**requant, "bias": bias.astype(np.int64), "input": (a_in.scale, a_in.zero_point),
               "hidden": (a_out.scale, a_out.zero_point),
               "cell_scale": file_rec["cell_scale"] if file_rec is not None else
               cell_scale_bound(steps, float(node.attrs.get("cell_clip", 0.0)))}
    s_in, (s_h, h_zp), s_c = rec["input"][0], rec["hidden"], rec["cell_scale"]
    fc = [L.fc_multiplier(s_in, s) for s in rec["w_scales"][:4]] + [L.fc_multiplier(s_h, s) for s in rec["w_scales"][4:]]
    mult = np.array([m for m, _ in fc], np.int32).reshape(2, 4)
    shift = np.array([e for _, e in fc], np.int32).reshape(2, 4)
    g = L.GATE_OUTPUT_SCALE
    cell = L.mul_multiplier(g, s_c, s_c)
    gate = L.mul_multiplier(g, g, s_c)
    hid = L.mul_multiplier(g, g, s_h)
    t_mult, t_shift = L.tanh_params(L.cell_scale_power(s_c))
    bias = np.asarray(rec["bias"], np.int64)  # a file's int32, or checked above before the cast
    return IntLstm(w_in=np.asarray(rec["w_in"], np.int8), w_rec=np.asarray(rec["w_rec"], np.int8),
                   bias=bias.astype(np.int32), fc_mult=mult, fc_shift=shift, in_zp=int(a_in.zero_point),
                   hid_zp=int(h_zp), cell_mult=int(cell[0]), cell_shift=int(cell[1]), gate_mult=int(gate[0]),
                   gate_shift=int(gate[1]), hid_mult=int(hid[0]), hid_shift=int(hid[1]), tanh_mult=int(t_mult),
                   tanh_shift=int(t_shift), cell_clip=L.quantized_clip(node.attrs.get("cell_clip", 0.0), s_c),
                   cell_act=str(node.attrs.get("cell_act", "tanh")),
                   w_scales=np.asarray(rec["w_scales"], np.float32), cell_scale=float(s_c))


def lower_svdf(node: Node, graph: Graph, a_in: ActQuant, a_out: ActQuant, requant: dict | None = None) -> IntSvdf:
    """An int8 SVDF from its .tflite (importers/tflite_import._Reader.svdf), with TFLite Micro's two
    multipliers (PrepareSvdf). ``requant`` None: its weights, bias and state quantization stay the file's;
    else the weights quant/stateful.quantize_svdf made, the bias on the new state x time grid (as
    PrepareSvdf requires), and the file's state quantization."""
    from ..intref.svdf import effective_scales

    rec = (graph.file_quant.svdfs.get(node.name) if graph.file_quant is not None else None)
    if rec is None:
        raise NupesError(f"layer '{node.name}' (svdf): an SVDF is taken from an int8 .tflite only (its activation "
                         "state's quantization); this model has none")
    if requant is None and ((a_in.scale, a_in.zero_point) != tuple(rec["input"])
                            or (a_out.scale, a_out.zero_point) != tuple(rec["output"])):
        raise NupesError(f"layer '{node.name}' (svdf): its input and output keep the file's quantization "
                         f"{tuple(rec['input'])}, {tuple(rec['output'])}; --recalibrate cannot change them")
    if requant is not None:
        s_bias = np.float64(np.float32(rec["state"][0])) * np.float64(np.float32(requant["time_scale"]))
        bias = round_half_away(np.asarray(node.bias, np.float64) / s_bias)
        if not np.all(np.abs(bias) <= INT32_MAX):  # on the floats: a huge one must not wrap in the cast
            raise NupesError(f"layer '{node.name}' (svdf): a bias {np.abs(bias).max():.3g} on the state x time grid "
                             "does not fit int32")
        rec = {**rec, **requant, "bias": bias.astype(np.int64)}
    s_state, state_zp = rec["state"]
    (m1, e1), (m2, e2) = effective_scales(a_in.scale, rec["feature_scale"], s_state, rec["time_scale"], a_out.scale)
    bias = np.asarray(rec["bias"], np.int64)  # a file's int32, or checked above before the cast
    return IntSvdf(w_feature=np.asarray(rec["w_feature"], np.int8), w_time=np.asarray(rec["w_time"], np.int16),
                   bias=bias.astype(np.int32), rank=int(node.attrs["rank"]), state_bits=int(rec["state_bits"]),
                   in_zp=int(a_in.zero_point), state_zp=int(state_zp), out_zp=int(a_out.zero_point), mult1=int(m1),
                   shift1=int(e1), mult2=int(m2), shift2=int(e2), feature_scale=float(rec["feature_scale"]),
                   time_scale=float(rec["time_scale"]), state_scale=float(s_state))


def lower(graph: Graph, act: dict[str, ActQuant], weights: dict[str, LayerWeights], kept: bool = False,
          levels: int = 16, lstm: dict | None = None, svdf: dict | None = None) -> dict:
    """Integer parameters of every node, by node name. A layer whose scales had to be floored gets
    its lowered weights written back into ``weights``, so the fake-quant model stays the same.
    ``kept``: the weights are a file's own (no flooring, see lower_layer_weights). ``lstm``: an LSTM's
    re-quantized weights by node name (quant/stateful.py); an LSTM not in it keeps its file's. ``svdf``:
    likewise an SVDF's."""
    params: dict = {}
    for node in graph.nodes:
        try:
            if node.op in ("conv2d", "linear"):
                params[node.name], weights[node.name] = lower_layer_weights(
                    node, weights[node.name], act[node.inputs[0]], act[node.output], kept, levels)
            elif node.op == "add":
                params[node.name] = lower_add(node, act[node.inputs[0]], act[node.inputs[1]], act[node.output])
            elif node.op in ("relu", "relu6"):
                params[node.name] = IntClamp(*act_range(node.op, act[node.output]))
            elif node.op == "clamp":
                params[node.name] = clamp_codes(node, act[node.output])
            elif node.op in ("maxpool2d", "avgpool2d", "global_avgpool"):
                params[node.name] = IntClamp(-128, 127)
            elif node.op == "mul":
                params[node.name] = lower_mul(node, act[node.inputs[0]], act[node.inputs[1]], act[node.output])
            elif node.op == "mean":
                _, h, w = graph.shapes[node.inputs[0]]
                params[node.name] = lower_mean(node, h * w, act[node.inputs[0]], act[node.output])
            elif node.op == "mean_reduce":
                params[node.name] = lower_mean(node, reduce_count(node.attrs["reduce"]), act[node.inputs[0]],
                                               act[node.output])
            elif node.op == "lstm":
                params[node.name] = lower_lstm(node, graph, act[node.inputs[0]], act[node.output],
                                               None if lstm is None else lstm.get(node.name))
            elif node.op == "svdf":
                params[node.name] = lower_svdf(node, graph, act[node.inputs[0]], act[node.output],
                                               None if svdf is None else svdf.get(node.name))
            elif node.op == "softmax":
                params[node.name] = lower_softmax(node, act[node.inputs[0]], act[node.output])
            elif node.op in TABLE_OPS:
                params[node.name] = lower_table(node, act[node.inputs[0]], act[node.output])
        except NupesError:
            raise
        except Exception as e:  # a bug: say where (the CLI reports it as an internal error, exit 3)
            raise RuntimeError(f"lowering layer '{node.name}' ({node.op}) failed: {type(e).__name__}: {e}") from e
    return params
