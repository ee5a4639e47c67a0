"""Write a QuantModel as a .tflite flatbuffer (TFLite schema object API; no TensorFlow).

Formats:
  float  float32 model whose weights are the NUPES-dequantized values (what the integer model
         multiplies by, s_w,c · sign(q) · L[|q|]) and the float biases.
  int8   fully-int8 model from our calibration: per-channel int8 weights, int8 activations, int32
         bias. For uniform layers (a = 1, G = 0) the int8 weights are the codes themselves and the
         file is bit-exact with the integer reference under TFLite Micro; for power-quantized layers
         the dequantized weights are re-quantized to int8 per channel (TFLite has no power grid).
  tflm-lut  the int8 model with every weight tensor LUT-compressed for TFLite Micro
         (tflite_micro.compression): b-bit indices into per-channel value tables, b = the layer's
         weight bits. A layer's 2·Qmax + 1 power levels stay at most 2^b distinct int8 values per
         channel, so the NUPES codebook survives, rounded to int8. TFLite Micro only.
Layout NHWC. Padding the TFLite SAME/VALID rules cannot express (PyTorch pads top/left where SAME
pads bottom/right) becomes an explicit PAD op, which pads int8 tensors with their zero point.
"""
from __future__ import annotations

import numpy as np
from ai_edge_litert import schema_py_generated as S
import flatbuffers

from . import moves
from .errors import NupesError
from .intparams import IntLayer
from .layout import weights_hwc
from .qmodel import QuantModel
from .quant.lower import layer_bias, weight_scale
from .quant.power import round_half_away

FORMATS = ("float", "int8", "tflm-lut")
_ACT = {"none": S.ActivationFunctionType.NONE, "relu": S.ActivationFunctionType.RELU,
        "relu6": S.ActivationFunctionType.RELU6}


def _nhwc(shape) -> list[int]:
    return [1, shape[1], shape[2], shape[0]] if len(shape) == 3 else [1, *shape]


def _same_pads(size: int, k: int, stride: int) -> tuple[int, int, int]:
    out = -(-size // stride)
    total = max((out - 1) * stride + k - size, 0)
    return total // 2, total - total // 2, out


class _Builder:
    def __init__(self):
        self.tensors: list = []
        self.buffers = [S.BufferT()]  # buffer 0: the empty buffer the schema requires
        self.ops: list = []
        self.opcodes: dict[int, int] = {}
        self.lut_tensors: list[tuple[int, int, int]] = []  # (tensor, channel axis, index bits)

    def buffer(self, data: np.ndarray | None) -> int:
        b = S.BufferT()
        if data is not None:
            b.data = np.frombuffer(np.ascontiguousarray(data).tobytes(), np.uint8)
        self.buffers.append(b)
        return len(self.buffers) - 1

    def tensor(self, name: str, shape, dtype, data=None, scale=None, zp=None, axis=0, lut_bits=None) -> int:
        t = S.TensorT()
        t.name, t.shape = name, list(shape)
        t.type = {np.int8: S.TensorType.INT8, np.int32: S.TensorType.INT32, np.float32: S.TensorType.FLOAT32,
                  np.uint8: S.TensorType.UINT8, np.int16: S.TensorType.INT16}[dtype]
        t.buffer = self.buffer(None if data is None else np.asarray(data, dtype)) if data is not None else 0
        if scale is not None:
            qp = S.QuantizationParametersT()
            qp.scale = [float(v) for v in np.atleast_1d(scale)]
            qp.zeroPoint = [int(v) for v in np.atleast_1d(zp)]
            qp.quantizedDimension = axis
            t.quantization = qp
        self.tensors.append(t)
        if lut_bits is not None:
            # indices as wide as the largest per-channel value table needs (often less than the
            # layer's bits: NUPES rarely uses every level), which TFLite Micro's compressor expects
            w = np.moveaxis(np.asarray(data), axis, 0).reshape(np.shape(data)[axis], -1)
            distinct = max(len(np.unique(row)) for row in w)
            self.lut_tensors.append((len(self.tensors) - 1, axis, min(lut_bits, max(1, int(np.ceil(np.log2(distinct)))))))
        return len(self.tensors) - 1

    def op(self, code: int, version: int, inputs, outputs, opt_type=0, options=None) -> None:
        if code not in self.opcodes:
            self.opcodes[code] = len(self.opcodes)
        o = S.OperatorT()
        o.opcodeIndex, o.inputs, o.outputs = self.opcodes[code], list(inputs), list(outputs)
        o.builtinOptionsType, o.builtinOptions = opt_type, options
        self.ops.append((code, version, o))

    def reshape(self, src: int, dst: int, shape, shape_name: str) -> None:
        """A RESHAPE of tensor ``src`` into ``dst`` (of ``shape``), its shape also as an int32 input."""
        opts = S.ReshapeOptionsT()
        opts.newShape = [int(v) for v in shape]
        st = self.tensor(shape_name, [len(opts.newShape)], np.int32, np.array(opts.newShape, np.int32))
        self.op(S.BuiltinOperator.RESHAPE, 1, [src, st], [dst], S.BuiltinOptions.ReshapeOptions, opts)

    def finish(self, inputs, outputs, description: str) -> bytes:
        m = S.ModelT()
        m.version = 3
        m.description = description
        codes = []
        for code, idx in sorted(self.opcodes.items(), key=lambda kv: kv[1]):
            oc = S.OperatorCodeT()
            oc.builtinCode = code
            oc.deprecatedBuiltinCode = min(code, 127)
            oc.version = max(v for c, v, _ in self.ops if c == code)
            codes.append(oc)
        m.operatorCodes = codes
        g = S.SubGraphT()
        g.tensors, g.inputs, g.outputs = self.tensors, list(inputs), list(outputs)
        g.operators = [o for _, _, o in self.ops]
        g.name = "main"
        m.subgraphs = [g]
        m.buffers = self.buffers
        fb = flatbuffers.Builder(1024)
        fb.Finish(m.Pack(fb), file_identifier=b"TFL3")
        return bytes(fb.Output())


def export(qm: QuantModel, fmt: str = "int8") -> bytes:
    """The .tflite bytes of ``qm`` in format ``fmt`` (float | int8)."""
    if fmt not in FORMATS:
        raise NupesError(f"unknown export format '{fmt}' (one of {', '.join(FORMATS)})")
    if fmt == "tflm-lut":
        return _lut_compress(qm)
    data, _ = _export(qm, fmt)
    return data


def _lut_compress(qm: QuantModel) -> bytes:
    from tflite_micro.tensorflow.lite.micro.compression import SpecBuilder, compress, spec

    too_wide = sorted(n for n, p in qm.params.items() if isinstance(p, IntLayer) and p.bits > 7)
    if too_wide:
        raise NupesError(f"tflm-lut needs weights of at most 7 bits (TFLite Micro's LUT index limit); "
                         f"layer(s) {', '.join(too_wide)} have 8")
    data, luts = _export(qm, "int8")
    sb = SpecBuilder()
    for tensor, axis, bits in luts:
        sb.add_tensor(0, tensor).with_lut(bits, spec.PerChannel(axis=axis))
    import contextlib
    import sys
    import warnings

    # the compressor prints notes and warns when a tiny tensor grows; keep stdout for --json
    with warnings.catch_warnings(), contextlib.redirect_stdout(sys.stderr):
        warnings.simplefilter("ignore")
        return bytes(compress(data, sb.build()))


def _export_moves(b: _Builder, node, g, qm: QuantModel, act_tensor, dt, quant: bool) -> None:
    """A copy (TRANSPOSE, STRIDED_SLICE, PACK, ...) as one GATHER of the inputs' bytes laid end to end,
    and a reduce_max as a GATHER of each output's values then REDUCE_MAX over them: exactly the
    importer's byte moves, whatever operator they came from (TFLite Micro has both kernels)."""
    q = qm.act[node.inputs[0]]

    def temp(suffix: str, shape, q=q) -> int:
        return b.tensor(f"{node.name}/{suffix}", list(shape), dt, scale=q.scale if quant else None,
                        zp=q.zero_point if quant else None)

    def reshape(x: int, shape, suffix: str) -> int:
        y = temp(suffix, shape)
        b.reshape(x, y, shape, f"{node.name}/{suffix}_shape")
        return y

    sizes = [int(np.prod(g.shapes[t])) for t in node.inputs]
    flats = [reshape(act_tensor(t), [n], f"flat{j}") for j, (t, n) in enumerate(zip(node.inputs, sizes))]
    src = flats[0]
    if len(flats) > 1:
        src = temp("joined", [sum(sizes)])
        opts = S.ConcatenationOptionsT()
        opts.axis = 0
        opts.fusedActivationFunction = S.ActivationFunctionType.NONE
        b.op(S.BuiltinOperator.CONCATENATION, 2 if quant else 1, flats, [src], S.BuiltinOptions.ConcatenationOptions, opts)
    n_out = int(np.prod(g.shapes[node.output]))
    if node.op == "copy":
        index = moves.gather_index(node.attrs["moves"], sizes, n_out)
        if node.attrs.get("fill", False):  # a zero insertion: index -1 gathers an appended zero
            zero = b.tensor(f"{node.name}/zero", [1], dt, np.array([q.zero_point if quant else 0], dt),
                            scale=q.scale if quant else None, zp=q.zero_point if quant else None)
            joined = temp("padded", [sum(sizes) + 1])
            opts = S.ConcatenationOptionsT()
            opts.axis = 0
            opts.fusedActivationFunction = S.ActivationFunctionType.NONE
            b.op(S.BuiltinOperator.CONCATENATION, 2 if quant else 1, [src, zero], [joined],
                 S.BuiltinOptions.ConcatenationOptions, opts)
            src, index = joined, np.where(index < 0, sum(sizes), index)
    else:
        index = moves.reduce_positions(node.attrs["reduce"], sizes[0], n_out)
    gathered = temp("gathered", index.shape)
    it = b.tensor(f"{node.name}/index", list(index.shape), np.int32, index.astype(np.int32))
    opts = S.GatherOptionsT()
    opts.axis = 0
    b.op(S.BuiltinOperator.GATHER, 2 if quant else 1, [src, it], [gathered], S.BuiltinOptions.GatherOptions, opts)
    if node.op in ("reduce_max", "mean_reduce"):  # over the gathered values of each output
        reduced = temp("reduced", [n_out], qm.act[node.output])
        ropts = S.ReducerOptionsT()
        ropts.keepDims = False
        axes = b.tensor(f"{node.name}/axes", [1], np.int32, np.array([1], np.int32))
        code = S.BuiltinOperator.REDUCE_MAX if node.op == "reduce_max" else S.BuiltinOperator.MEAN
        b.op(code, 2 if quant else 1, [gathered, axes], [reduced], S.BuiltinOptions.ReducerOptions, ropts)
        gathered = reduced
    b.reshape(gathered, act_tensor(node.output), _nhwc(g.shapes[node.output]), f"{node.name}/out_shape")


def _export_lstm(b: _Builder, node, g, qm: QuantModel, act_tensor, quant: bool) -> None:
    """UNIDIRECTIONAL_SEQUENCE_LSTM between RESHAPEs (the IR's F x 1 x T is [1, 1, T, F] in NHWC; the
    operator takes [1, T, F]). int8: the kept weights, scales, int32 biases and the int16 cell state,
    as TFLite's converter writes them; float: the float weights and float states."""
    f, _, steps = g.shapes[node.inputs[0]]
    units = g.shapes[node.output][0]
    q_in, q_out = qm.act[node.inputs[0]], qm.act[node.output]
    p = qm.params[node.name]
    dt = np.int8 if quant else np.float32

    def reshaped(src: int, shape, q, suffix: str, dst: int | None = None) -> int:
        if dst is None:
            dst = b.tensor(f"{node.name}/{suffix}", shape, dt, scale=q.scale if quant else None,
                           zp=q.zero_point if quant else None)
        b.reshape(src, dst, shape, f"{node.name}/{suffix}/shape")
        return dst

    x = reshaped(act_tensor(node.inputs[0]), [1, steps, f], q_in, "sequence")
    weights, biases = [], []
    for j in range(8):
        g_, rec = j % 4, j >= 4
        if quant:
            w = (p.w_rec if rec else p.w_in)[g_]
            weights.append(b.tensor(f"{node.name}/w{j}", list(w.shape), np.int8, w, scale=float(p.w_scales[j]), zp=0))
        else:
            w = node.weight[g_][:, f:] if rec else node.weight[g_][:, :f]
            weights.append(b.tensor(f"{node.name}/w{j}", list(w.shape), np.float32, w))
    for g_ in range(4):
        if quant:
            biases.append(b.tensor(f"{node.name}/b{g_}", [units], np.int32, np.asarray(p.bias[g_], np.int32),
                                   scale=float(np.float32(q_in.scale) * np.float32(p.w_scales[g_])), zp=0))
        else:
            biases.append(b.tensor(f"{node.name}/b{g_}", [units], np.float32, np.asarray(node.bias[g_], np.float32)))
    hidden = b.tensor(f"{node.name}/hidden_state", [1, units], dt, scale=q_out.scale if quant else None,
                      zp=q_out.zero_point if quant else None)
    cell = b.tensor(f"{node.name}/cell_state", [1, units], np.int16 if quant else np.float32,
                    scale=p.cell_scale if quant else None, zp=0 if quant else None)
    for t in (hidden, cell):
        b.tensors[t].isVariable = True
    y = b.tensor(f"{node.name}/hidden_states", [1, steps, units], dt, scale=q_out.scale if quant else None,
                 zp=q_out.zero_point if quant else None)
    opts = S.UnidirectionalSequenceLSTMOptionsT()
    opts.fusedActivationFunction = S.ActivationFunctionType.TANH
    opts.cellClip = float(node.attrs.get("cell_clip", 0.0))
    opts.timeMajor = False
    ins = [x, *weights[:4], *weights[4:], -1, -1, -1, *biases, -1, -1, hidden, cell, -1, -1, -1, -1]
    b.op(S.BuiltinOperator.UNIDIRECTIONAL_SEQUENCE_LSTM, 1, ins, [y], S.BuiltinOptions.UnidirectionalSequenceLSTMOptions,
         opts)
    if quant:  # LiteRT's integer LSTM wants the converter's five intermediates (TFLite Micro ignores them)
        mids = [b.tensor(f"{node.name}/{gate}_intermediate", [0], np.float32) for gate in ("input", "forget", "cell",
                                                                                          "output")]
        mids.append(b.tensor(f"{node.name}/effective_hidden_scale_intermediate", [0], np.int8, scale=q_out.scale,
                             zp=q_out.zero_point))
        b.ops[-1][2].intermediates = mids
    reshaped(y, _nhwc(g.shapes[node.output]), q_out, "flat", dst=act_tensor(node.output))


def _export_svdf(b: _Builder, node, g, qm: QuantModel, act_tensor, quant: bool) -> None:
    """SVDF on [1, I] -> [1, U] (the IR's vectors). int8: the kept feature and time weights, the int32 bias
    and the activation state as a variable tensor of the file's type, scale and zero point; float: the
    float weights and a float state."""
    n_in = g.shapes[node.inputs[0]][0]
    filters, memory = node.weight.shape[0], node.weight.shape[1] - n_in
    units = g.shapes[node.output][0]
    if quant:
        p = qm.params[node.name]
        st_dt = np.int16 if int(p.state_bits) == 16 else np.int8
        wf = b.tensor(f"{node.name}/weights_feature", [filters, n_in], np.int8, p.w_feature, scale=p.feature_scale, zp=0)
        wt = b.tensor(f"{node.name}/weights_time", [filters, memory], st_dt, np.asarray(p.w_time).astype(st_dt),
                      scale=p.time_scale, zp=0)
        bias = b.tensor(f"{node.name}/bias", [units], np.int32, np.asarray(p.bias, np.int32),
                        scale=float(np.float32(p.state_scale) * np.float32(p.time_scale)), zp=0)
        state = b.tensor(f"{node.name}/activation_state", [1, filters * memory], st_dt, scale=p.state_scale,
                         zp=int(p.state_zp))
    else:
        w = np.asarray(node.weight, np.float32)
        wf = b.tensor(f"{node.name}/weights_feature", [filters, n_in], np.float32, w[:, :n_in])
        wt = b.tensor(f"{node.name}/weights_time", [filters, memory], np.float32, w[:, n_in:])
        bias = b.tensor(f"{node.name}/bias", [units], np.float32, np.asarray(node.bias, np.float32))
        state = b.tensor(f"{node.name}/activation_state", [1, filters * memory], np.float32)
    b.tensors[state].isVariable = True
    opts = S.SVDFOptionsT()
    opts.rank, opts.fusedActivationFunction = int(node.attrs["rank"]), _ACT[node.act]
    b.op(S.BuiltinOperator.SVDF, 3 if quant else 1, [act_tensor(node.inputs[0]), wf, wt, bias, state],
         [act_tensor(node.output)], S.BuiltinOptions.SVDFOptions, opts)


def _export(qm: QuantModel, fmt: str) -> tuple[bytes, list]:
    g = qm.graph
    quant = fmt == "int8"
    b = _Builder()
    dt = np.int8 if quant else np.float32
    fq = qm.fq_weights()
    ids: dict[str, int] = {}
    flatten_src: dict[str, tuple] = {}

    def act_tensor(name: str) -> int:
        if name not in ids:
            a = qm.act[name]
            ids[name] = b.tensor(name, _nhwc(g.shapes[name]), dt, scale=a.scale if quant else None,
                                 zp=a.zero_point if quant else None)
        return ids[name]

    act_tensor(g.input_name)
    for node in g.nodes:
        a = node.attrs
        if node.op in ("flatten", "reshape"):
            if node.op == "flatten":
                flatten_src[node.output] = g.shapes[node.inputs[0]]
            b.reshape(act_tensor(node.inputs[0]), act_tensor(node.output), _nhwc(g.shapes[node.output]),
                      node.name + "/shape")
            continue
        if node.op in ("conv2d", "maxpool2d", "avgpool2d"):
            x = act_tensor(node.inputs[0])
            c, h, w = g.shapes[node.inputs[0]]
            kh, kw = node.weight.shape[2:] if node.op == "conv2d" else a["kernel"]
            sh, sw = a["stride"]
            pt, pl, pb, pr = a["pads"]
            oh, ow = g.shapes[node.output][1:]
            st, sbm, soh = _same_pads(h, kh, sh)
            sl, srt, sow = _same_pads(w, kw, sw)
            if not any(a["pads"]):
                padding = S.Padding.VALID
            elif (pt, pb, pl, pr, oh, ow) == (st, sbm, sl, srt, soh, sow):
                padding = S.Padding.SAME
            elif node.op == "maxpool2d":
                raise NupesError(f"layer '{node.name}': max-pool padding {a['pads']} has no TFLite equivalent")
            else:  # explicit PAD (int8: pads with the zero point, i.e. real 0), then VALID
                pads = np.array([[0, 0], [pt, pb], [pl, pr], [0, 0]], np.int32)
                xq = qm.act[node.inputs[0]]
                padded = b.tensor(node.name + "/padded", [1, h + pt + pb, w + pl + pr, c], dt,
                                  scale=xq.scale if quant else None, zp=xq.zero_point if quant else None)
                b.op(S.BuiltinOperator.PAD, 2, [x, b.tensor(node.name + "/pads", [4, 2], np.int32, pads)], [padded],
                     S.BuiltinOptions.PadOptions, S.PadOptionsT())
                x, padding = padded, S.Padding.VALID
        if node.op in ("conv2d", "linear"):
            p: IntLayer = qm.params[node.name]
            lw = qm.weights[node.name]
            w_real = fq[node.name][0].numpy().astype(np.float64)
            bias_real = layer_bias(node, lw)
            depthwise = node.op == "conv2d" and a["groups"] != 1
            if quant:
                x_scale = qm.act[node.inputs[0]].scale
                if p.a == 1.0 and p.G == 0:  # the codes are int8 already: exact
                    s_w, w_int, bias = weight_scale(lw, 0), p.codes.astype(np.int8), p.bias
                else:
                    s_w = (np.abs(w_real.reshape(len(w_real), -1)).max(axis=1) / 127.0).astype(np.float32).astype(np.float64)
                    s_w = np.where(s_w > 0, s_w, 1.0)
                    w_int = np.clip(round_half_away(w_real / s_w.reshape((-1,) + (1,) * (w_real.ndim - 1))), -127, 127).astype(np.int8)
                    bias = round_half_away(bias_real / (x_scale * s_w)).astype(np.int32)
                w_store, b_store = w_int, bias.astype(np.int32)
            else:
                s_w, w_store, b_store = None, w_real.astype(np.float32), bias_real.astype(np.float32)
            bdt = np.int32 if quant else np.float32
            if node.op == "linear":
                rows = weights_hwc(w_store, "linear", flatten_src.get(node.inputs[0]))
                wt = b.tensor(node.name + "/weights", list(rows.shape), dt, rows, scale=s_w, zp=np.zeros(len(rows), int) if quant else None,
                              lut_bits=p.bits if quant else None)
                bt = b.tensor(node.name + "/bias", [len(rows)], bdt, b_store,
                              scale=qm.act[node.inputs[0]].scale * s_w if quant else None, zp=np.zeros(len(rows), int) if quant else None)
                opts = S.FullyConnectedOptionsT()
                opts.fusedActivationFunction = _ACT[node.act]
                b.op(S.BuiltinOperator.FULLY_CONNECTED, 9 if quant else 1, [act_tensor(node.inputs[0]), wt, bt], [act_tensor(node.output)],
                     S.BuiltinOptions.FullyConnectedOptions, opts)
                continue
            o = w_store.shape[0]
            if depthwise:
                wdata = np.ascontiguousarray(w_store.transpose(1, 2, 3, 0))  # (1, kh, kw, O)
                axis = 3
            else:
                wdata = np.ascontiguousarray(w_store.transpose(0, 2, 3, 1))  # OHWI
                axis = 0
            wt = b.tensor(node.name + "/weights", list(wdata.shape), dt, wdata, scale=s_w,
                          zp=np.zeros(o, int) if quant else None, axis=axis, lut_bits=p.bits if quant else None)
            bt = b.tensor(node.name + "/bias", [o], bdt, b_store, scale=qm.act[node.inputs[0]].scale * s_w if quant else None,
                          zp=np.zeros(o, int) if quant else None)
            if depthwise:
                opts = S.DepthwiseConv2DOptionsT()
                opts.depthMultiplier = o // c
                code, ot, ver = S.BuiltinOperator.DEPTHWISE_CONV_2D, S.BuiltinOptions.DepthwiseConv2DOptions, 3
            else:
                opts = S.Conv2DOptionsT()
                code, ot, ver = S.BuiltinOperator.CONV_2D, S.BuiltinOptions.Conv2DOptions, 3
            opts.padding, opts.strideH, opts.strideW = padding, sh, sw
            opts.dilationHFactor = opts.dilationWFactor = 1
            opts.fusedActivationFunction = _ACT[node.act]
            b.op(code, ver if quant else 1, [x, wt, bt], [act_tensor(node.output)], ot, opts)
        elif node.op in ("maxpool2d", "avgpool2d", "global_avgpool"):
            opts = S.Pool2DOptionsT()
            if node.op == "global_avgpool":
                x = act_tensor(node.inputs[0])
                _, h, w = g.shapes[node.inputs[0]]
                opts.filterHeight, opts.filterWidth, opts.strideH, opts.strideW = h, w, 1, 1
                padding = S.Padding.VALID
            else:
                opts.filterHeight, opts.filterWidth = a["kernel"]
                opts.strideH, opts.strideW = a["stride"]
            opts.padding = padding
            opts.fusedActivationFunction = S.ActivationFunctionType.NONE
            code = S.BuiltinOperator.MAX_POOL_2D if node.op == "maxpool2d" else S.BuiltinOperator.AVERAGE_POOL_2D
            b.op(code, 2 if quant else 1, [x], [act_tensor(node.output)], S.BuiltinOptions.Pool2DOptions, opts)
        elif node.op == "mul":
            opts = S.MulOptionsT()
            opts.fusedActivationFunction = _ACT[node.act]
            b.op(S.BuiltinOperator.MUL, 2 if quant else 1, [act_tensor(t) for t in node.inputs], [act_tensor(node.output)],
                 S.BuiltinOptions.MulOptions, opts)
        elif node.op == "mean":  # TFLite's MEAN over H and W, keeping the dims (its own output scale)
            opts = S.ReducerOptionsT()
            opts.keepDims = True
            axes = b.tensor(node.name + "/axes", [2], np.int32, np.array([1, 2], np.int32))
            b.op(S.BuiltinOperator.MEAN, 2 if quant else 1, [act_tensor(node.inputs[0]), axes], [act_tensor(node.output)],
                 S.BuiltinOptions.ReducerOptions, opts)
        elif node.op == "add":
            opts = S.AddOptionsT()
            opts.fusedActivationFunction = _ACT[node.act]
            b.op(S.BuiltinOperator.ADD, 2 if quant else 1, [act_tensor(t) for t in node.inputs], [act_tensor(node.output)],
                 S.BuiltinOptions.AddOptions, opts)
        elif node.op in ("sigmoid", "tanh", "hardswish"):
            code = {"sigmoid": S.BuiltinOperator.LOGISTIC, "tanh": S.BuiltinOperator.TANH,
                    "hardswish": S.BuiltinOperator.HARD_SWISH}[node.op]
            b.op(code, (1 if node.op == "hardswish" else 2) if quant else 1, [act_tensor(node.inputs[0])],
                 [act_tensor(node.output)])
        elif node.op == "concat":
            opts = S.ConcatenationOptionsT()
            opts.axis = 3 if len(g.shapes[node.output]) == 3 else 1  # the channels of N x H x W x C / N x C
            opts.fusedActivationFunction = S.ActivationFunctionType.NONE
            b.op(S.BuiltinOperator.CONCATENATION, 2 if quant else 1, [act_tensor(t) for t in node.inputs],
                 [act_tensor(node.output)], S.BuiltinOptions.ConcatenationOptions, opts)
        elif node.op in ("maximum", "minimum"):
            code = S.BuiltinOperator.MAXIMUM if node.op == "maximum" else S.BuiltinOperator.MINIMUM
            b.op(code, 2 if quant else 1, [act_tensor(t) for t in node.inputs], [act_tensor(node.output)])
        elif node.op == "clamp":  # MAXIMUM and / or MINIMUM with one constant value
            x = act_tensor(node.inputs[0])
            q = qm.act[node.inputs[0]]
            p = qm.params[node.name]
            steps = [(S.BuiltinOperator.MAXIMUM, a.get("lo"), p.lo), (S.BuiltinOperator.MINIMUM, a.get("hi"), p.hi)]
            steps = [s for s in steps if s[1] is not None]
            for j, (code, real, coded) in enumerate(steps):
                value = np.array([coded], np.int8) if quant else np.array([real], np.float32)
                c = b.tensor(f"{node.name}/bound{j}", [1], dt, value, scale=q.scale if quant else None,
                             zp=q.zero_point if quant else None)
                y = act_tensor(node.output) if j == len(steps) - 1 else b.tensor(
                    f"{node.name}/t{j}", _nhwc(g.shapes[node.output]), dt, scale=q.scale if quant else None,
                    zp=q.zero_point if quant else None)
                b.op(code, 2 if quant else 1, [x, c], [y])
                x = y
        elif node.op in ("copy", "reduce_max", "mean_reduce"):
            _export_moves(b, node, g, qm, act_tensor, dt, quant)
        elif node.op == "requantize":  # int8 -> int8 QUANTIZE; in a float model the same values
            if quant:
                b.op(S.BuiltinOperator.QUANTIZE, 2, [act_tensor(node.inputs[0])], [act_tensor(node.output)])
            else:
                ids[node.output] = act_tensor(node.inputs[0])
        elif node.op == "leaky_relu":
            opts = S.LeakyReluOptionsT()
            opts.alpha = float(a["alpha"])
            b.op(S.BuiltinOperator.LEAKY_RELU, 2 if quant else 1, [act_tensor(node.inputs[0])], [act_tensor(node.output)],
                 S.BuiltinOptions.LeakyReluOptions, opts)
        elif node.op == "lstm":
            _export_lstm(b, node, g, qm, act_tensor, quant)
        elif node.op == "svdf":
            _export_svdf(b, node, g, qm, act_tensor, quant)
        elif node.op == "softmax":
            opts = S.SoftmaxOptionsT()
            opts.beta = float(a.get("beta", 1.0))
            b.op(S.BuiltinOperator.SOFTMAX, 2 if quant else 1, [act_tensor(node.inputs[0])], [act_tensor(node.output)],
                 S.BuiltinOptions.SoftmaxOptions, opts)
        elif node.op in ("relu", "relu6"):
            code = S.BuiltinOperator.RELU if node.op == "relu" else S.BuiltinOperator.RELU6
            b.op(code, 2 if quant else 1, [act_tensor(node.inputs[0])], [act_tensor(node.output)])
        else:  # pragma: no cover
            raise NupesError(f"layer '{node.name}': op {node.op} cannot be exported")
    out = ids[g.output_name]
    if g.output_softmax:  # the source model's final Softmax (the integer model outputs its logits)
        probs = b.tensor(g.output_name + "/softmax", _nhwc(g.shapes[g.output_name]), dt,
                         scale=1.0 / 256 if quant else None, zp=-128 if quant else None)  # TFLite's int8 rule
        opts = S.SoftmaxOptionsT()
        opts.beta = float(g.softmax_beta)
        b.op(S.BuiltinOperator.SOFTMAX, 2 if quant else 1, [out], [probs], S.BuiltinOptions.SoftmaxOptions, opts)
        out = probs
    data = b.finish([ids[g.input_name]], [out], f"nupes-edge {qm.method} {fmt} ({qm.name})")
    return data, b.lut_tensors
