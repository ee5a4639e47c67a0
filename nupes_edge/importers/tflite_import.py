"""Import a float32 or int8 .tflite (TFLite schema, read with flatbuffers; no TensorFlow) into the IR.

NHWC tensors become the IR's C×H×W; OHWI / 1HWO weights become OIHW; SAME padding and PAD ops
become explicit pads; int8 weights and int32 biases are dequantized for the float graph, and an
int8 file's own quantization (activation scales and zero points, int8 weights with their scales,
int32 biases) is kept beside it in ``graph.file_quant`` so quantizing can reproduce the file
exactly (quant/keep.py). A Dense layer fed by a RESHAPE of
an H×W×C tensor gets its columns reordered to the IR's C, H, W flatten order. Anything unsupported
or malformed is a NupesError naming the file and the operator.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field

import numpy as np

from ..errors import NupesError
from ..ir import Graph, Node, infer_shapes
from . import flatbuffer_bounds

_MAX_BYTES = 512 * 1024 * 1024


@dataclass
class FileQuant:
    """An int8 .tflite's quantization, by IR tensor / node name."""

    act: dict[str, tuple[float, int]] = field(default_factory=dict)  # tensor → (float32 scale, zp)
    # node → (int8 weights in IR layout, per-output-channel float32 scales, int32 bias)
    layers: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = field(default_factory=dict)
    conflicts: list[str] = field(default_factory=list)  # why the file cannot be kept exactly
    softmax_out: tuple[float, int] | None = None  # the final SOFTMAX's output quantization, if any
# What the flatbuffer may unpack to (shared tables counted each time they are reached): far above
# any microcontroller model (MLPerf Tiny IC: under 600 tables), far below a memory bomb.
_MAX_TABLES = 200_000
_MAX_STRING_BYTES = 16 * 1024 * 1024


def _op_names():
    from ai_edge_litert import schema_py_generated as S

    return {v: k for k, v in vars(S.BuiltinOperator).items() if not k.startswith("_")}


def _chw(shape) -> tuple[int, ...]:
    shape = [int(v) for v in shape]
    if len(shape) == 4:
        if shape[0] != 1:
            raise ValueError(f"batch {shape[0]}")
        return (shape[3], shape[1], shape[2])
    if len(shape) == 2:
        return (shape[1],)
    raise ValueError(f"rank-{len(shape)} tensor")


class _Reader:
    def __init__(self, data: bytes, origin: str):
        from ai_edge_litert import schema_py_generated as S

        self.S = S
        self.origin = origin
        buf = bytearray(data)
        try:
            flatbuffer_bounds.measure(S.Model.GetRootAs(buf, 0), S, _MAX_TABLES, _MAX_STRING_BYTES)
        except ValueError as e:
            raise NupesError(f"{origin}: refused before unpacking: {e}") from None
        self.model = S.ModelT.InitFromPackedBuf(buf, 0)
        subgraphs = self.model.subgraphs or []
        if len(subgraphs) != 1:
            raise NupesError(f"{origin}: {len(subgraphs)} subgraphs; only single-subgraph models are supported")
        self.sg = subgraphs[0]
        self.names = _op_names()
        self.nodes: list[Node] = []
        self.alias: dict[int, int] = {}  # tensor → tensor whose values it has (QUANTIZE, DEQUANTIZE, ...)
        self.pads: dict[int, tuple[int, int, tuple]] = {}  # PAD output → (source tensor, pads)
        self.flat_src: dict[int, tuple] = {}  # RESHAPE-to-2D output → the H×W×C shape it flattened
        self.producer: dict[str, Node] = {}
        self.users: dict[int, int] = {}
        self.softmax_of: int | None = None
        self.softmax_out: int | None = None
        self.softmax_beta = 1.0
        self.file_quant = FileQuant()

    # -- tensors -------------------------------------------------------------------------------
    def t(self, i: int):
        return self.sg.tensors[i]

    def name(self, i: int) -> str:
        i = self.alias.get(i, i)
        return f"t{i}"

    def const(self, i: int, what: str, op: str, raw: bool = False) -> np.ndarray:
        """A constant tensor's values, dequantized (``raw``: as stored, for shapes and indices)."""
        t = self.t(i)
        buf = self.model.buffers[t.buffer].data if t.buffer < len(self.model.buffers) else None
        if buf is None or len(buf) == 0:
            raise NupesError(f"{self.origin}: {op}: the {what} (tensor {i}) is not a constant")
        S = self.S
        dtype = {S.TensorType.FLOAT32: np.float32, S.TensorType.INT8: np.int8, S.TensorType.INT32: np.int32}.get(t.type)
        if dtype is None:
            raise NupesError(f"{self.origin}: {op}: the {what} has unsupported type {t.type}")
        shape = [int(v) for v in t.shape]
        a = np.frombuffer(np.asarray(buf, np.uint8).tobytes(), dtype)
        if min(shape, default=0) < 0 or a.size != math.prod(shape):
            raise NupesError(f"{self.origin}: {op}: the {what} holds {a.size} values for shape {shape}")
        a = a.reshape(shape)
        if raw:
            return a
        with np.errstate(all="ignore"):  # non-finite results are refused below, with the tensor named
            a = self._dequantized(a, t, dtype, what, op)
        if not np.isfinite(a).all():
            raise NupesError(f"{self.origin}: {op}: the {what} (tensor {i}) holds values that are not finite "
                             "float32 numbers (NaN, infinity, or a scale too large)")
        return a

    def _dequantized(self, a: np.ndarray, t, dtype, what: str, op: str) -> np.ndarray:
        a = a.astype(np.float64)
        q = t.quantization
        if dtype != np.float32:
            if q is None or q.scale is None or len(q.scale) == 0:
                raise NupesError(f"{self.origin}: {op}: the {what} is integer but has no quantization scale")
            scale = np.asarray(q.scale, np.float64)
            zp = np.asarray(q.zeroPoint if q.zeroPoint is not None else [0], np.float64)
            axis = int(q.quantizedDimension) if len(scale) > 1 else 0
            view = [1] * a.ndim
            if len(scale) > 1:
                view[axis] = -1
            a = (a - zp.reshape(view)) * scale.reshape(view)
        return a.astype(np.float32)

    # -- an int8 file's own quantization ----------------------------------------------------------
    def quant_of(self, i: int):
        """(float32 scale, zero point) of tensor ``i`` if it is a per-tensor int8 tensor, else None."""
        t = self.t(i)
        q = t.quantization
        if t.type != self.S.TensorType.INT8 or q is None or q.scale is None or len(q.scale) != 1:
            return None
        zp = int(q.zeroPoint[0]) if q.zeroPoint is not None and len(q.zeroPoint) else 0
        return float(np.float32(q.scale[0])), zp

    def keep_layer(self, node: Node, ins: list[int], to_ir) -> None:
        """Record a conv / dense layer's int8 weights, float32 scales and int32 bias as stored."""
        wt = self.t(ins[1])
        if wt.type != self.S.TensorType.INT8:
            return
        codes = to_ir(self.const(ins[1], "weights", node.op, raw=True)).astype(np.int8)
        o = codes.shape[0]
        scales = np.asarray(wt.quantization.scale, np.float32)
        scales = np.broadcast_to(scales, (o,)).copy() if scales.size in (1, o) else None
        if len(ins) > 2 and ins[2] >= 0 and self.t(ins[2]).type == self.S.TensorType.INT32:
            bias = self.const(ins[2], "bias", node.op, raw=True).astype(np.int64).reshape(-1)
        elif len(ins) > 2 and ins[2] >= 0:
            self.file_quant.conflicts.append(f"{node.source}: the bias is not int32")
            return
        else:
            bias = np.zeros(o, np.int64)
        if scales is None or bias.shape != (o,):
            self.file_quant.conflicts.append(f"{node.source}: weight scales or bias do not match {o} channels")
            return
        zps = wt.quantization.zeroPoint
        if zps is not None and np.any(np.asarray(zps) != 0):
            self.file_quant.conflicts.append(f"{node.source}: weights with a non-zero zero point")
            return
        self.file_quant.layers[node.name] = (codes, scales, bias)

    def keep_activations(self) -> None:
        """Every IR tensor's int8 (scale, zero point) from the file; tensors merged into one IR name
        (QUANTIZE, RESHAPE, SOFTMAX's input) must agree, or the file cannot be kept exactly."""
        for i in range(len(self.sg.tensors)):
            q = self.quant_of(i)
            if q is None or (self.t(i).buffer < len(self.model.buffers)
                             and self.model.buffers[self.t(i).buffer].data is not None
                             and len(self.model.buffers[self.t(i).buffer].data)):
                continue  # not an int8 activation (constants are kept per layer)
            if i == self.softmax_out:  # the probabilities: 1/256, -128 by TFLite's rule
                self.file_quant.softmax_out = q
                continue
            name = self.name(i)
            have = self.file_quant.act.setdefault(name, q)
            if have != q:
                self.file_quant.conflicts.append(f"tensor {i}: quantization {q} differs from {have} of the "
                                                 f"tensor it is merged with (a requantizing QUANTIZE or RESHAPE)")

    # -- ops -----------------------------------------------------------------------------------
    def emit(self, op_index: int, op: str, inputs: list[int], output: int, attrs=None, weight=None, bias=None) -> Node:
        node = Node(name=f"{op}_{op_index}", op=op, inputs=[self.name(i) for i in inputs], output=self.name(output),
                    attrs=attrs or {}, weight=weight, bias=bias, source=f"operator {op_index} in {self.origin}")
        self.nodes.append(node)
        self.producer[node.output] = node
        return node

    def spatial_pads(self, opts, x: int, kh: int, kw: int, sh: int, sw: int) -> tuple[int, list[int]]:
        src, extra = self.pads.get(x, (x, (0, 0, 0, 0)))
        c, h, w = _chw(self.t(x).shape)
        pads = [0, 0, 0, 0]
        if opts.padding == self.S.Padding.SAME:
            for dim, (size, k, s) in enumerate(((h, kh, sh), (w, kw, sw))):
                out = -(-size // s)
                total = max((out - 1) * s + k - size, 0)
                pads[dim], pads[dim + 2] = total // 2, total - total // 2
        pads = [p + e for p, e in zip(pads, extra)]
        return src, pads

    def fuse(self, node: Node, act_code: int, op_index: int) -> None:
        A = self.S.ActivationFunctionType
        act = {A.NONE: "none", A.RELU: "relu", A.RELU6: "relu6"}.get(act_code)
        if act is None:
            raise NupesError(f"{self.origin}: operator {op_index}: fused activation {act_code} is not supported")
        node.attrs["act"] = act

    def run(self) -> Graph:
        ops = self.sg.operators or []
        for op in ops:
            for i in list(op.inputs if op.inputs is not None else []):
                self.users[int(i)] = self.users.get(int(i), 0) + 1
        for k, op in enumerate(ops):
            oc = self.model.operatorCodes[op.opcodeIndex]
            code = max(int(oc.builtinCode), int(oc.deprecatedBuiltinCode))
            name = self.names.get(code, str(code))
            ins = [int(i) for i in (op.inputs if op.inputs is not None else [])]
            outs = [int(i) for i in (op.outputs if op.outputs is not None else [])]
            o = op.builtinOptions
            if self.softmax_of is not None:
                raise NupesError(f"{self.origin}: operator {k} ({name}) follows SOFTMAX; Softmax must be the final op")
            if name in ("QUANTIZE", "DEQUANTIZE"):
                self.alias[outs[0]] = self.alias.get(ins[0], ins[0])
            elif name == "PAD":
                p = self.const(ins[1], "paddings", name, raw=True).astype(int)
                if p.shape != (4, 2) or p[0].any() or p[3].any():
                    raise NupesError(f"{self.origin}: operator {k} (PAD): only spatial padding of an N×H×W×C tensor is supported")
                self.pads[outs[0]] = (ins[0], (int(p[1, 0]), int(p[2, 0]), int(p[1, 1]), int(p[2, 1])))
            elif name in ("CONV_2D", "DEPTHWISE_CONV_2D"):
                w = self.const(ins[1], "weights", name)
                if o.dilationHFactor not in (0, 1) or o.dilationWFactor not in (0, 1):
                    raise NupesError(f"{self.origin}: operator {k} ({name}): dilation is not supported")
                if name == "CONV_2D":
                    w = w.transpose(0, 3, 1, 2)  # OHWI → OIHW
                else:
                    w = w.transpose(3, 0, 1, 2)  # 1HWO → O1HW
                kh, kw = w.shape[2:]
                src, pads = self.spatial_pads(o, ins[0], kh, kw, o.strideH, o.strideW)
                bias = self.const(ins[2], "bias", name) if len(ins) > 2 and ins[2] >= 0 else np.zeros(w.shape[0], np.float32)
                groups = 1 if name == "CONV_2D" else _chw(self.t(src).shape)[0]
                node = self.emit(k, "conv2d", [src], outs[0], {"stride": [o.strideH, o.strideW], "pads": pads,
                                                              "groups": groups}, w, bias.astype(np.float32))
                self.fuse(node, o.fusedActivationFunction, k)
                order = (0, 3, 1, 2) if name == "CONV_2D" else (3, 0, 1, 2)
                self.keep_layer(node, ins, lambda a: a.transpose(order))
            elif name == "FULLY_CONNECTED":
                w = self.const(ins[1], "weights", name)
                if o is not None and o.keepNumDims:
                    raise NupesError(f"{self.origin}: operator {k} (FULLY_CONNECTED): keep_num_dims is not supported")
                src = self.alias.get(ins[0], ins[0])
                if src in self.flat_src:  # undo the HWC flatten order
                    c, h, wd = self.flat_src[src]
                    w = w.reshape(w.shape[0], h, wd, c).transpose(0, 3, 1, 2).reshape(w.shape[0], -1)
                bias = self.const(ins[2], "bias", name) if len(ins) > 2 and ins[2] >= 0 else np.zeros(w.shape[0], np.float32)
                node = self.emit(k, "linear", [ins[0]], outs[0], {}, w, bias.astype(np.float32))
                self.fuse(node, o.fusedActivationFunction if o is not None else 0, k)
                hwc = self.flat_src.get(src)

                def reorder(a, hwc=hwc):
                    if hwc is None:
                        return a
                    c, h, wd = hwc
                    return a.reshape(a.shape[0], h, wd, c).transpose(0, 3, 1, 2).reshape(a.shape[0], -1)
                self.keep_layer(node, ins, reorder)
            elif name == "ADD":
                node = self.emit(k, "add", ins[:2], outs[0], {})
                self.fuse(node, o.fusedActivationFunction if o is not None else 0, k)
            elif name in ("MAX_POOL_2D", "AVERAGE_POOL_2D"):
                kh, kw = o.filterHeight, o.filterWidth
                src, pads = self.spatial_pads(o, ins[0], kh, kw, o.strideH, o.strideW)
                c, h, w = _chw(self.t(src).shape)
                if name == "AVERAGE_POOL_2D" and (kh, kw) == (h, w) and not any(pads):
                    node = self.emit(k, "global_avgpool", [src], outs[0])
                else:
                    node = self.emit(k, "maxpool2d" if name == "MAX_POOL_2D" else "avgpool2d", [src], outs[0],
                                     {"kernel": [kh, kw], "stride": [o.strideH, o.strideW], "pads": pads})
                if o.fusedActivationFunction:
                    raise NupesError(f"{self.origin}: operator {k} ({name}): a fused activation on a pool is not supported")
            elif name == "MEAN":
                axes = sorted(int(v) for v in self.const(ins[1], "axes", name, raw=True).ravel())
                if axes != [1, 2]:
                    raise NupesError(f"{self.origin}: operator {k} (MEAN): only the spatial mean over H, W is supported")
                node = self.emit(k, "global_avgpool", [ins[0]], outs[0])
                if not (o is not None and o.keepDims):
                    node.output = node.output + "_pooled"
                    self.producer[node.output] = node
                    self.emit(k, "flatten", [], outs[0]).inputs = [node.output]
            elif name == "RESHAPE":
                in_shape = [int(v) for v in self.t(ins[0]).shape]
                out_shape = [int(v) for v in self.t(outs[0]).shape]
                if len(out_shape) == 2 and len(in_shape) == 4:
                    self.emit(k, "flatten", [ins[0]], outs[0])
                    self.flat_src[outs[0]] = _chw(in_shape)
                elif in_shape == out_shape:
                    self.alias[outs[0]] = self.alias.get(ins[0], ins[0])
                else:
                    raise NupesError(f"{self.origin}: operator {k} (RESHAPE {in_shape} → {out_shape}) is not supported")
            elif name in ("RELU", "RELU6"):
                self.emit(k, name.lower(), [ins[0]], outs[0])
            elif name == "CONCATENATION":
                rank = len(self.t(outs[0]).shape)
                if o is None or o.axis not in (rank - 1, -1) or o.fusedActivationFunction:
                    raise NupesError(f"{self.origin}: operator {k} (CONCATENATION): only along the channels (the last "
                                     "axis), without a fused activation, is supported")
                self.emit(k, "concat", ins, outs[0])
            elif name in ("LOGISTIC", "TANH", "HARD_SWISH"):
                self.emit(k, {"LOGISTIC": "sigmoid", "TANH": "tanh", "HARD_SWISH": "hardswish"}[name], [ins[0]], outs[0])
            elif name == "LEAKY_RELU":
                self.emit(k, "leaky_relu", [ins[0]], outs[0], {"alpha": float(np.float32(o.alpha)) if o else 0.2})
            elif name == "SOFTMAX":
                self.softmax_of = ins[0]
                self.softmax_out = outs[0]
                self.softmax_beta = float(o.beta) if o is not None else 1.0
                self.alias[outs[0]] = self.alias.get(ins[0], ins[0])
            else:
                raise NupesError(f"{self.origin}: operator {k} ({name}) is not supported")
        if len(self.sg.inputs) != 1 or len(self.sg.outputs) != 1:
            raise NupesError(f"{self.origin}: only models with one input and one output are supported")
        inp = int(self.sg.inputs[0])
        graph = Graph(input_name=self.name(inp), input_shape=_chw(self.t(inp).shape),
                      output_name=self.name(int(self.sg.outputs[0])), nodes=self.nodes,
                      output_softmax=self.softmax_of is not None, input_layout="NHWC")
        graph.softmax_beta = self.softmax_beta
        infer_shapes(graph)
        self.keep_activations()
        if self.file_quant.layers:
            graph.file_quant = self.file_quant
        return graph


def import_tflite_bytes(data: bytes, origin: str = "model.tflite") -> Graph:
    if len(data) < 8 or data[4:8] != b"TFL3":
        raise NupesError(f"{origin}: not a TFLite flatbuffer (no 'TFL3' identifier)")
    try:
        return _Reader(data, origin).run()
    except NupesError:
        raise
    except Exception as e:  # a malformed flatbuffer fails in many ways inside the generated reader
        raise NupesError(f"{origin}: malformed .tflite ({type(e).__name__}: {str(e)[:200]})") from None


def import_tflite(path: str) -> Graph:
    if not os.path.isfile(path):
        raise NupesError(f"{path}: no such file")
    if os.path.getsize(path) > _MAX_BYTES:
        raise NupesError(f"{path}: larger than {_MAX_BYTES >> 20} MiB")
    with open(path, "rb") as f:
        return import_tflite_bytes(f.read(), os.path.basename(path))
