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

from .. import moves
from ..errors import NupesError
from ..ir import Graph, Node, infer_shapes
from . import flatbuffer_bounds

_MAX_BYTES = 512 * 1024 * 1024
_MAX_CONST_BYTES = 256 * 1024 * 1024  # constants materialised during import (float64), all references counted


@dataclass
class FileQuant:
    """An int8 .tflite's quantization, by IR tensor / node name."""

    act: dict[str, tuple[float, int]] = field(default_factory=dict)  # tensor → (float32 scale, zp)
    # node → (int8 weights in IR layout, per-output-channel float32 scales, int32 bias)
    layers: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = field(default_factory=dict)
    conflicts: list[str] = field(default_factory=list)  # why the file cannot be kept exactly
    softmax_out: tuple[float, int] | None = None  # the final SOFTMAX's output quantization, if any
    # node → an int8 LSTM's integers and scales as stored (_Reader.lstm): kept whatever the method
    lstms: dict[str, dict] = field(default_factory=dict)
    # node → an int8 SVDF's integers and scales as stored (_Reader.svdf): kept whatever the method
    svdfs: dict[str, dict] = field(default_factory=dict)
# What the flatbuffer may unpack to (shared tables counted each time they are reached): far above
# any microcontroller model (MLPerf Tiny IC: under 600 tables), far below a memory bomb.
_MAX_TABLES = 200_000
_MAX_STRING_BYTES = 16 * 1024 * 1024


def _op_names():
    from ai_edge_litert import schema_py_generated as S

    return {v: k for k, v in vars(S.BuiltinOperator).items() if not k.startswith("_")}


def _chw(shape) -> tuple[int, ...]:
    """A .tflite tensor's shape in the IR, whose device bytes are the file's bytes in the same order:
    [1, H, W, C] -> (C, H, W); [1, A, B] -> (B, 1, A) (a sequence: one row of A pixels of B channels);
    [1, F] and [F] -> (F,)."""
    shape = [int(v) for v in shape]
    if len(shape) in (2, 3, 4) and shape[0] != 1:
        raise ValueError(f"batch {shape[0]}")
    if len(shape) == 4:
        return (shape[3], shape[1], shape[2])
    if len(shape) == 3:
        return (shape[2], 1, shape[1])
    if len(shape) == 2:
        return (shape[1],)
    if len(shape) == 1:
        return (shape[0],)
    raise ValueError(f"rank-{len(shape)} tensor")


def _chw_any(shape) -> tuple[int, ...]:
    """The IR shape of a tensor only byte moves touch (any rank, any leading dimension): as _chw where
    that applies, else one row of pixels whose channels are the last axis (the same bytes)."""
    try:
        return _chw(shape)
    except ValueError:
        shape = [int(v) for v in shape] or [1]
        return (shape[-1], 1, math.prod(shape[:-1])) if len(shape) > 1 else (shape[0],)


def _tf_range(dim: int, begin: int, end: int, stride: int, begin_masked: bool, end_masked: bool,
              shrink: bool) -> list[int]:
    """The positions STRIDED_SLICE takes along one axis, as TFLite Micro's StartForAxis / StopForAxis
    (strided_slice_logic.h): negative indices count from the end, then clamp to the axis; a masked end
    takes the whole axis; a shrunk axis takes one position."""
    def clamp(v):
        return min(max(v, 0), dim) if stride > 0 else min(max(v, -1), dim - 1)

    start = clamp((-1 if stride > 0 else dim) if begin_masked else (begin + dim if begin < 0 else begin))
    if shrink:
        if not 0 <= start < dim:
            raise ValueError(f"shrinking an axis of {dim} positions at {begin}")
        return [start]
    stop = (dim if stride > 0 else -1) if end_masked else clamp(end + dim if end < 0 else end)
    return list(range(start, stop, stride))


def strided_slice(a: np.ndarray, begin, end, strides, o) -> np.ndarray:
    """TFLite Micro's STRIDED_SLICE of ``a`` (values or an index array). ``o``: its StridedSliceOptionsT."""
    if o is not None and (o.ellipsisMask or o.newAxisMask or getattr(o, "offset", False)):
        raise ValueError("ellipsis_mask, new_axis_mask and offset are not supported (TFLite Micro ignores them)")
    n = len(begin)
    if not (len(end) == len(strides) == n == a.ndim) or any(int(v) == 0 for v in strides):
        raise ValueError(f"begin {list(begin)}, end {list(end)} and strides {list(strides)} do not fit a "
                         f"rank-{a.ndim} tensor")
    bm, em, sm = (o.beginMask, o.endMask, o.shrinkAxisMask) if o is not None else (0, 0, 0)
    index = [_tf_range(a.shape[ax], int(begin[ax]), int(end[ax]), int(strides[ax]), bool(bm >> ax & 1),
                       bool(em >> ax & 1), bool(sm >> ax & 1)) for ax in range(a.ndim)]
    out = a[np.ix_(*index)] if all(index) else np.zeros([len(i) for i in index], a.dtype)
    return out.reshape([len(i) for ax, i in enumerate(index) if not sm >> ax & 1])


# Every builtin operator this importer maps: (the IR op it becomes, what it accepts, where its int8
# arithmetic comes from in TFLite Micro). docs/tflite.md's operator table is generated from it.
OPERATORS = {
    "CONV_2D": ("conv2d", "any kernel, stride, SAME/VALID; dilation 1", "kernels/conv.cc, reference_integer_ops::ConvPerChannel"),
    "DEPTHWISE_CONV_2D": ("conv2d (groups = C)", "any depth multiplier; dilation 1",
                          "kernels/depthwise_conv.cc, reference_integer_ops::DepthwiseConvPerChannel"),
    "TRANSPOSE_CONV": ("copy (zero insertion) then conv2d (the kernel flipped, stride 1)",
                       "any kernel, stride, SAME/VALID, output shape; with or without bias; dilation 1",
                       "kernels/transpose_conv.cc, reference_integer_ops::TransposeConv (the same int32 sums)"),
    "FULLY_CONNECTED": ("linear, or a 1×1 conv2d on every row", "an input of any rank: one row, or one per time "
                        "step / pixel (a Dense layer on a sequence)",
                        "kernels/fully_connected.cc, reference_integer_ops::FullyConnected"),
    "ADD": ("add", "equal shapes (no broadcasting)", "kernels/add.cc, reference_integer_ops::Add"),
    "MUL": ("mul", "equal shapes, or one operand of one value per channel (squeeze-and-excite)",
            "kernels/mul_common.cc, reference_integer_ops::Mul / BroadcastMul4DSlow"),
    "MAX_POOL_2D": ("maxpool2d", "padding up to half the kernel", "kernels/pooling.cc, reference_integer_ops::MaxPool"),
    "AVERAGE_POOL_2D": ("avgpool2d / global_avgpool", "no padding", "kernels/pooling.cc, reference_integer_ops::AveragePool"),
    "MEAN": ("mean (H, W of N×H×W×C or T of N×T×C), else mean_reduce", "any axes, either keep_dims, any output scale",
             "kernels/reduce_common.cc, reference_ops::QuantizedMeanOrSum"),
    "PAD": ("(folded into the next conv / pool)", "spatial padding only", "kernels/pad.cc"),
    "RESHAPE": ("reshape (no copy)", "any shape of batch 1", "kernels/reshape.cc (a byte copy)"),
    "SQUEEZE": ("reshape (no copy)", "as RESHAPE", "kernels/squeeze.cc (a byte copy)"),
    "EXPAND_DIMS": ("reshape (no copy)", "as RESHAPE", "kernels/expand_dims.cc (a byte copy)"),
    "QUANTIZE": ("requantize (a 256-entry table) or none", "float32 or uint8 (zero point moved by 128) -> int8 at the input; int8 -> int8; int8 -> "
                 "uint8 (zero point moved by 128) at the output",
                 "kernels/quantize_common.cc, reference_ops::Requantize"),
    "DEQUANTIZE": ("none: the model outputs int8 with its scale and zero point", "int8 -> float32 at the output",
                   "kernels/dequantize_common.cc"),
    "RELU": ("relu (a clamp)", "", "kernels/activations_common.cc"),
    "RELU6": ("relu6 (a clamp)", "", "kernels/activations_common.cc"),
    "CONCATENATION": ("concat, or copy along another axis", "any axis, any rank, one quantization",
                      "kernels/concatenation.cc (a byte copy)"),
    "TRANSPOSE": ("copy (strided byte moves)", "any permutation, ranks 1-5", "kernels/transpose.cc (a byte copy)"),
    "STRIDED_SLICE": ("copy (strided byte moves), or folded on constants", "any begin/end/strides, begin/end/shrink "
                      "masks; no ellipsis or new-axis mask, no offset", "kernels/strided_slice.cc (a byte copy)"),
    "PACK": ("copy (strided byte moves), or folded on constants", "any axis", "kernels/pack.cc (a byte copy)"),
    "UNPACK": ("copy (one per output)", "any axis", "kernels/unpack.cc (a byte copy)"),
    "RESIZE_NEAREST_NEIGHBOR": ("copy (strided byte moves)", "N×H×W×C; scales whose row map is strided (integer "
                                "factors, any align_corners / half_pixel_centers)",
                                "kernels/resize_nearest_neighbor.cc, reference_ops::ResizeNearestNeighbor"),
    "SPLIT": ("copy (one per output)", "any axis", "kernels/split.cc (a byte copy)"),
    "SPLIT_V": ("copy (one per output)", "any axis, constant sizes", "kernels/split_v.cc (a byte copy)"),
    "REDUCE_MAX": ("reduce_max", "any axes, either keep_dims; input and output share the scale",
                   "kernels/reduce_common.cc, EvalMinMaxHelper (the largest code)"),
    "MAXIMUM": ("maximum, or clamp with a constant", "two tensors of one shape, or one constant value; one "
                "quantization for all", "kernels/maximum_minimum.cc (the codes compared)"),
    "MINIMUM": ("minimum, or clamp with a constant", "as MAXIMUM", "kernels/maximum_minimum.cc (the codes compared)"),
    "SHAPE": ("folded (a constant)", "a tensor of static shape", "kernels/shape.cc"),
    "CAST": ("folded on constants", "integer shape arithmetic only", "kernels/cast.cc"),
    "GATHER": ("folded on constants", "integer shape arithmetic only", "kernels/gather.cc"),
    "LOGISTIC": ("sigmoid (a 256-entry table)", "output 1/256, -128", "kernels/logistic_common.cc"),
    "TANH": ("tanh (a 256-entry table)", "output 1/128, 0", "kernels/tanh_common.cc"),
    "HARD_SWISH": ("hardswish (a 256-entry table)", "", "kernels/hard_swish_common.cc"),
    "LEAKY_RELU": ("leaky_relu (a 256-entry table)", "", "kernels/leaky_relu_common.cc"),
    "UNIDIRECTIONAL_SEQUENCE_LSTM": ("lstm (int8 weights per gate, int16 cell state: kept from an int8 file, "
                                     "else quantized by the method)",
                                     "int8 or float32, batch-major, batch 1; no peephole, projection or layer "
                                     "norm; every inference starts from the reset state, or with quantize "
                                     "--state carry continues from the previous one's",
                                     "kernels/unidirectional_sequence_lstm.cc, lstm_eval.h (LstmStep)"),
    "SVDF": ("svdf (weights kept from the file, or quantized by the method; the state's quantization kept)",
             "int8 input and output, batch 1, with a bias; int16 time weights and state (zero point 0) or int8 "
             "ones; activation NONE, or RELU on an output of zero point -128; every inference starts from the "
             "reset state, or with quantize --state carry continues from the previous one's",
             "kernels/svdf.cc, svdf_common.cc (EvalIntegerSvdfReference)"),
    "SOFTMAX": ("softmax (on the device) or left to the caller", "the final operator, over the last axis",
                "kernels/softmax_common.cc, reference_integer_ops::Softmax"),
}
SUPPORTED = tuple(OPERATORS)
# Operators evaluated at import when every input is a constant (or, for SHAPE, has a static shape)
# and the result is an integer: the shape arithmetic of Keras' Reshape/Flatten (SHAPE,
# STRIDED_SLICE, PACK, then RESHAPE's shape input) becomes a constant, as TFLite Micro's Prepare sees it
FOLDABLE = ("SHAPE", "STRIDED_SLICE", "PACK", "CONCATENATION", "CAST", "RESHAPE", "SQUEEZE", "EXPAND_DIMS", "GATHER",
            "ADD", "SUB", "MUL", "FLOOR_DIV")
# Operators mapped only when folded (their activations versions are not)
FOLD_ONLY = ("SHAPE", "CAST", "GATHER")
# Operators that only rearrange values: byte moves (moves.py) on int8 or float tensors of any rank
MOVE_OPS = ("TRANSPOSE", "STRIDED_SLICE", "PACK", "UNPACK", "SPLIT", "SPLIT_V", "RESIZE_NEAREST_NEIGHBOR")
AFTER_SOFTMAX = ("QUANTIZE", "DEQUANTIZE", "RESHAPE", "SQUEEZE", "EXPAND_DIMS")


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
        self.quant_like: dict[str, str] = {}  # helper IR tensor → the file tensor whose quantization it has
        self.declared: list[tuple[int, str]] = []  # (file tensor, IR tensor) of every node output, checked at the end
        self.producer: dict[str, Node] = {}
        self.users: dict[int, int] = {}
        self.softmax_of: int | None = None
        self.softmax_out: int | None = None
        self.softmax_beta = 1.0
        self.file_quant = FileQuant()
        self.folded: dict[int, np.ndarray] = {}  # tensor -> its value, computed at import (FOLDABLE)
        self.folded_ops: set[int] = set()
        self.const_bytes = 0  # what const() materialised, a buffer shared by many operators counted each time

    # -- tensors -------------------------------------------------------------------------------
    def t(self, i: int):
        return self.sg.tensors[i]

    def name(self, i: int) -> str:
        i = self.alias.get(i, i)
        return f"t{i}"

    def is_const(self, i: int) -> bool:
        if i in self.folded:
            return True
        t = self.t(i)
        return t.buffer < len(self.model.buffers) and self.model.buffers[t.buffer].data is not None \
            and len(self.model.buffers[t.buffer].data) > 0

    def shape_of(self, i: int) -> list[int]:
        return [int(v) for v in (self.t(i).shape if self.t(i).shape is not None else [])]

    def index(self, i: int) -> np.ndarray:
        """Each value's position in tensor i's bytes, in its own shape (what byte moves are built from)."""
        shape = self.shape_of(i)
        if min(shape, default=1) < 1 or math.prod(shape) > 1 << 24:
            raise ValueError(f"tensor {i} has shape {shape}")
        return np.arange(math.prod(shape), dtype=np.int64).reshape(shape)

    def const(self, i: int, what: str, op: str, raw: bool = False) -> np.ndarray:
        """A constant tensor's values, dequantized (``raw``: as stored, for shapes and indices)."""
        if i in self.folded:
            if not raw:
                raise NupesError(f"{self.origin}: {op}: the {what} (tensor {i}) is computed from shapes, not stored")
            return self.folded[i]
        t = self.t(i)
        buf = self.model.buffers[t.buffer].data if t.buffer < len(self.model.buffers) else None
        if buf is None or len(buf) == 0:
            raise NupesError(f"{self.origin}: {op}: the {what} (tensor {i}) is not a constant")
        S = self.S
        dtype = {S.TensorType.FLOAT32: np.float32, S.TensorType.INT8: np.int8, S.TensorType.INT32: np.int32,
                 S.TensorType.INT64: np.int64}.get(t.type)
        if dtype is None:
            raise NupesError(f"{self.origin}: {op}: the {what} has unsupported type {t.type}")
        shape = [int(v) for v in t.shape]
        self.const_bytes += 8 * len(buf)  # float64 while dequantized
        if self.const_bytes > _MAX_CONST_BYTES:
            raise NupesError(f"{self.origin}: its operators' constants add up to more than {_MAX_CONST_BYTES >> 20} MiB "
                             "once unpacked (a weight shared by many operators counts each time)")
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
            if a.ndim == 1:  # a per-channel axis a 1-D tensor does not have is ignored, as TFLite does
                axis = 0
            if len(scale) > 1 and not 0 <= axis < a.ndim:
                raise NupesError(f"{self.origin}: {op}: the {what} is quantized along axis {axis} of a "
                                 f"rank-{a.ndim} tensor")
            if len(scale) > 1 and len(scale) != a.shape[axis]:
                raise NupesError(f"{self.origin}: {op}: the {what} has {len(scale)} scales for {a.shape[axis]} "
                                 f"channels along axis {axis}")
            if len(zp) not in (1, len(scale)):
                raise NupesError(f"{self.origin}: {op}: the {what} has {len(zp)} zero points for {len(scale)} scales")
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
        scale = float(np.float32(q.scale[0]))
        if not (math.isfinite(scale) and scale > 0) or not -128 <= zp <= 127:
            name = t.name.decode(errors="replace")[:60] if isinstance(t.name, bytes) else str(t.name or "")[:60]
            raise NupesError(f"{self.origin}: tensor {i} ({name!r}) has int8 quantization scale {q.scale[0]!r}, zero "
                             f"point {zp}: a scale must be a positive finite number and the zero point in -128..127")
        return scale, zp

    def keep_layer(self, node: Node, ins: list[int], to_ir) -> None:
        """Record a conv / dense layer's int8 weights, float32 scales and int32 bias as stored."""
        wt = self.t(ins[1])
        if wt.type != self.S.TensorType.INT8:
            return
        codes = to_ir(self.const(ins[1], "weights", node.op, raw=True)).astype(np.int8)
        o = codes.shape[0]
        scales = np.asarray(wt.quantization.scale, np.float32)
        if scales.size and not (np.isfinite(scales).all() and (scales >= 0).all()):
            raise NupesError(f"{self.origin}: {node.source}: weight scales must be finite and not negative "
                             f"(found {scales[~(np.isfinite(scales) & (scales >= 0))][0]!r})")
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
            for helper, like in self.quant_like.items():
                if like == name:
                    self.file_quant.act.setdefault(helper, q)
            if have != q:
                self.file_quant.conflicts.append(f"tensor {i}: quantization {q} differs from {have} of the "
                                                 f"tensor it is merged with (a requantizing QUANTIZE or RESHAPE)")

    # -- ops -----------------------------------------------------------------------------------
    def emit(self, op_index: int, op: str, inputs: list[int], output: int, attrs=None, weight=None, bias=None) -> Node:
        node = Node(name=f"{op}_{op_index}", op=op, inputs=[self.name(i) for i in inputs], output=self.name(output),
                    attrs=attrs or {}, weight=weight, bias=bias, source=f"operator {op_index} in {self.origin}")
        self.nodes.append(node)
        self.producer[node.output] = node
        self.declared.append((output, node.output))
        return node

    def emit_named(self, k: int, suffix: str, op: str, inputs: list[str], output: str, attrs=None) -> Node:
        """A node of the IR's own (no file tensor of its own): operator k's helper step."""
        node = Node(name=f"{suffix}_{k}", op=op, inputs=inputs, output=output, attrs=attrs or {},
                    source=f"operator {k} in {self.origin}")
        self.nodes.append(node)
        self.producer[output] = node
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

    def op_name(self, op) -> str:
        oc = self.model.operatorCodes[op.opcodeIndex]
        code = max(int(oc.builtinCode), int(oc.deprecatedBuiltinCode))
        name = self.names.get(code, str(code))
        if name == "CUSTOM":
            custom = oc.customCode.decode(errors="replace") if oc.customCode else "?"
            return "CUSTOM " + "".join(ch if ch.isprintable() else "?" for ch in custom)[:64]
        return name

    def check_supported(self, ops) -> None:
        """One refusal naming every operator and tensor type this importer cannot map."""
        T = self.S.TensorType
        type_names = {v: k for k, v in vars(T).items() if not k.startswith("_")}
        unsupported: dict[str, list[int]] = {}
        for k, op in enumerate(ops):
            name = self.op_name(op)
            if (name not in SUPPORTED or name in FOLD_ONLY) and k not in self.folded_ops:
                unsupported.setdefault(name if name not in FOLD_ONLY else f"{name} of activations", []).append(k)
        # tensors only unsupported operators read or write internally (an LSTM's intermediates)
        state_of_unsupported = set()
        for k, op in enumerate(ops):
            if k in {k2 for ks in unsupported.values() for k2 in ks}:
                outs = {int(v) for v in (op.outputs if op.outputs is not None else [])}
                state_of_unsupported |= {int(v) for v in (op.intermediates if getattr(op, "intermediates", None) is not None
                                                          else [])} - outs
        problems = [f"{name} (operator{'s' if len(ks) > 1 else ''} {', '.join(map(str, ks[:5]))}"
                    f"{', ...' if len(ks) > 5 else ''})" for name, ks in unsupported.items()]
        kinds = set()
        for i, t in enumerate(self.sg.tensors or []):
            is_const = t.buffer < len(self.model.buffers) and self.model.buffers[t.buffer].data is not None \
                and len(self.model.buffers[t.buffer].data) > 0
            edges = [int(v) for v in (self.sg.inputs if self.sg.inputs is not None else [])] + \
                [int(v) for v in (self.sg.outputs if self.sg.outputs is not None else [])]
            uint8_input = t.type == T.UINT8 and i in edges  # a model input or output (QUANTIZE moves it by 128)
            # a variable tensor is an operator's own state (an LSTM's int16 cell state, an SVDF's memory): its
            # type belongs to that operator, named above, and does not make the model a 16x8 one
            if t.isVariable or i in state_of_unsupported:
                continue
            if not is_const and i not in self.folded and t.type not in (T.INT8, T.FLOAT32) and not uint8_input:
                kinds.add(type_names.get(t.type, str(t.type)))
        if kinds:
            problems.append(f"{'/'.join(sorted(kinds))} activations"
                            + (" (16x8 models: int16 activations are not supported yet)" if "INT16" in kinds else ""))
        if problems:
            raise NupesError(f"{self.origin}: not supported: {'; '.join(problems)}. nupes-edge maps "
                             f"{', '.join(SUPPORTED)} with int8 or float32 activations (docs/tflite.md)")

    def ir_shape(self, i: int, k: int, what: str) -> tuple[int, ...]:
        try:
            return _chw(self.t(i).shape)
        except ValueError as e:
            raise NupesError(f"{self.origin}: operator {k}: the {what} has shape {[int(v) for v in self.t(i).shape]} "
                             f"({e}); only batch 1 and ranks 1-4 are supported") from None

    def reshape(self, k: int, src: int, out: int, suffix: str = "") -> None:
        """The file's RESHAPE (and SQUEEZE / EXPAND_DIMS): the same bytes, another shape."""
        ishape, oshape = _chw_any(self.t(src).shape), _chw_any(self.t(out).shape)
        if math.prod(ishape) != math.prod(oshape):
            raise NupesError(f"{self.origin}: operator {k} (RESHAPE {[int(v) for v in self.t(src).shape]} → "
                             f"{[int(v) for v in self.t(out).shape]}) changes the number of values")
        if ishape == oshape or (len(ishape) == 3 and len(oshape) == 3 and ishape[1:] == (1, 1) == oshape[1:]):
            self.alias[out] = self.alias.get(src, src)
        else:
            self.emit(k, "reshape", [src], out, {"shape": list(oshape)})

    # int8 outputs TFLite Micro's kernels require (its Prepare refuses any other)
    FIXED_OUTPUT = {"LOGISTIC": (1.0 / 256, -128), "SOFTMAX": (1.0 / 256, -128), "TANH": (1.0 / 128, 0)}

    def check_fixed_output(self, k: int, name: str, out: int) -> None:
        q, want = self.quant_of(out), self.FIXED_OUTPUT.get(name)
        if q is not None and want is not None and (abs(q[0] - want[0]) > 1e-6 * want[0] or q[1] != want[1]):
            raise NupesError(f"{self.origin}: operator {k} ({name}): int8 output quantization (scale {q[0]:g}, zero point "
                             f"{q[1]}) must be ({want[0]:g}, {want[1]}), as TFLite Micro requires")

    def fold(self, ops) -> None:
        """Evaluate FOLDABLE operators on constants (see FOLDABLE) into self.folded."""
        T = self.S.TensorType
        ints = {T.INT32: np.int32, T.INT64: np.int64}
        for k, op in enumerate(ops):
            name = self.op_name(op)
            ins = [int(i) for i in (op.inputs if op.inputs is not None else [])]
            outs = [int(i) for i in (op.outputs if op.outputs is not None else [])]
            if name not in FOLDABLE or len(outs) != 1 or self.t(outs[0]).type not in ints:
                continue
            args = [i for i in ins if i >= 0]
            if name != "SHAPE" and not all(self.is_const(i) and self.t(i).type in ints for i in args):
                continue
            o = op.builtinOptions
            if getattr(o, "fusedActivationFunction", 0):
                continue
            try:
                value = self.evaluate(name, o, args)
                declared = self.shape_of(outs[0])
                value = np.asarray(value).astype(ints[self.t(outs[0]).type])
                if value.size != math.prod(declared):
                    raise ValueError(f"gives {value.size} values where the file declares shape {declared}")
            except (ValueError, IndexError, TypeError, ZeroDivisionError) as e:
                raise NupesError(f"{self.origin}: operator {k} ({name}) on constants: {str(e)[:200]}") from None
            self.folded[outs[0]] = value.reshape(declared)
            self.folded_ops.add(k)

    def evaluate(self, name: str, o, args: list[int]) -> np.ndarray:
        if name == "SHAPE":
            return np.array(self.shape_of(args[0]), np.int64)
        v = [self.const(i, "input", name, raw=True) for i in args]
        if name == "STRIDED_SLICE":
            return strided_slice(v[0], v[1].ravel(), v[2].ravel(), v[3].ravel(), o)
        if name == "PACK":
            return np.stack(v, axis=o.axis if o is not None else 0)
        if name == "CONCATENATION":
            return np.concatenate(v, axis=o.axis if o is not None else 0)
        if name == "GATHER":
            return np.take(v[0], v[1], axis=o.axis if o is not None else 0)
        if name in ("ADD", "SUB", "MUL"):
            a, b = v[0].astype(np.int64), v[1].astype(np.int64)
            return {"ADD": np.add, "SUB": np.subtract, "MUL": np.multiply}[name](a, b)
        if name == "FLOOR_DIV":
            if np.any(v[1] == 0):
                raise ZeroDivisionError("division by zero")
            return np.floor_divide(v[0].astype(np.int64), v[1].astype(np.int64))
        return v[0]  # CAST, RESHAPE, SQUEEZE, EXPAND_DIMS: the values as they are (reshaped by the caller)

    def moves_op(self, k: int, name: str, ins: list[int], outs: list[int], o) -> None:
        """TRANSPOSE, STRIDED_SLICE, PACK, UNPACK, SPLIT(_V), CONCATENATION: one copy node per output,
        its byte moves built from index arrays in the file's own shapes (any rank)."""
        try:
            for i in ins if name not in ("SPLIT",) else ins[1:]:
                if i in self.pads:
                    raise ValueError("its input is a PAD output (padding is folded into convolutions only)")
            if name == "TRANSPOSE":
                perm = [int(v) for v in self.const(ins[1], "permutation", name, raw=True).ravel()]
                x = self.index(ins[0])
                if sorted(perm) != list(range(x.ndim)):
                    raise ValueError(f"permutation {perm} of a rank-{x.ndim} tensor")
                groups = [(outs[0], [(ins[0], x.transpose(perm), None)])]
            elif name == "RESIZE_NEAREST_NEIGHBOR":
                x = self.index(ins[0])
                out_shape = self.shape_of(outs[0])
                if x.ndim != 4 or len(out_shape) != 4:
                    raise ValueError("only N x H x W x C tensors")
                size = [int(v) for v in self.const(ins[1], "size", name, raw=True).ravel()]
                if size != out_shape[1:3]:
                    raise ValueError(f"size {size} differs from the output's declared {out_shape[1:3]}")
                align, half = bool(getattr(o, "alignCorners", False)), bool(getattr(o, "halfPixelCenters", False))
                ys = moves.nearest_rows(size[0], x.shape[1], align, half)
                xs = moves.nearest_rows(size[1], x.shape[2], align, half)
                src, dst = moves.repeats_split(x[:, ys][:, :, xs], self.index(outs[0]), [ys, xs])
                groups = [(outs[0], [(ins[0], src, dst)])]
            elif name == "STRIDED_SLICE":
                begin, end, strides = (self.const(i, what, name, raw=True).ravel()
                                       for i, what in zip(ins[1:4], ("begin", "end", "strides")))
                groups = [(outs[0], [(ins[0], strided_slice(self.index(ins[0]), begin, end, strides, o), None)])]
            elif name in ("PACK", "CONCATENATION"):
                out_shape = self.shape_of(outs[0])
                pos = self.index(outs[0])
                axis = o.axis if o is not None else 0
                if not -len(out_shape) <= axis < len(out_shape):
                    raise ValueError(f"axis {axis} of a rank-{len(out_shape)} output")
                parts, start = [], 0
                for j, i in enumerate(ins):
                    if name == "PACK":
                        dst = pos.take(j, axis=axis)
                    else:
                        size = self.shape_of(i)[axis]
                        dst = pos.take(range(start, start + size), axis=axis)
                        start += size
                    parts.append((i, self.index(i), dst))
                if name == "CONCATENATION" and start != out_shape[axis]:
                    raise ValueError(f"inputs of {start} positions along axis {axis} for an output of {out_shape[axis]}")
                groups = [(outs[0], parts)]
            elif name == "UNPACK":
                x = self.index(ins[0])
                axis = (o.axis if o is not None else 0) % max(x.ndim, 1)
                if x.shape[axis] != len(outs):
                    raise ValueError(f"{len(outs)} outputs for {x.shape[axis]} positions along axis {axis}")
                groups = [(out, [(ins[0], x.take(j, axis=axis), None)]) for j, out in enumerate(outs)]
            else:  # SPLIT (axis, input) and SPLIT_V (input, sizes, axis)
                src = ins[1] if name == "SPLIT" else ins[0]
                x = self.index(src)
                axis_t = ins[0] if name == "SPLIT" else ins[2]
                axis = int(self.const(axis_t, "axis", name, raw=True).ravel()[0]) % max(x.ndim, 1)
                if name == "SPLIT":
                    if x.shape[axis] % len(outs):
                        raise ValueError(f"{x.shape[axis]} positions along axis {axis} do not split in {len(outs)}")
                    sizes = [x.shape[axis] // len(outs)] * len(outs)
                else:
                    sizes = [int(v) for v in self.const(ins[1], "sizes", name, raw=True).ravel()]
                    if sizes.count(-1) == 1:
                        sizes[sizes.index(-1)] = x.shape[axis] - (sum(sizes) + 1)
                if len(sizes) != len(outs) or min(sizes) < 1 or sum(sizes) != x.shape[axis]:
                    raise ValueError(f"sizes {sizes} do not split {x.shape[axis]} positions in {len(outs)}")
                pieces = np.split(x, np.cumsum(sizes)[:-1], axis=axis)
                groups = [(out, [(src, piece, None)]) for out, piece in zip(outs, pieces)]
            for j, (out, parts) in enumerate(groups):
                declared = self.shape_of(out)
                mv = []
                for _, srcs, dst in parts:
                    if dst is None:
                        if list(srcs.shape) != declared:
                            raise ValueError(f"output shape {list(srcs.shape)}, but the file declares {declared}")
                        dst = np.arange(srcs.size, dtype=np.int64).reshape(srcs.shape)
                    if srcs.shape != dst.shape:
                        raise ValueError(f"an input of shape {list(srcs.shape)} for a part of shape {list(dst.shape)}")
                    mv.append(moves.affine_move(srcs, dst))
                node = self.emit(k, "copy", [i for i, _, _ in parts], out, {"shape": list(_chw_any(declared)), "moves": mv})
                if len(groups) > 1:
                    node.name = f"copy_{k}_{j}"
        except (ValueError, IndexError) as e:
            raise NupesError(f"{self.origin}: operator {k} ({name}): {str(e)[:200]}") from None

    def dense_rows(self, k: int, ins: list[int], out: int, o, w: np.ndarray, shape: tuple[int, ...]) -> None:
        """FULLY_CONNECTED on every row of an N×T×F or N×H×W×F input (a Dense layer on a sequence):
        a 1×1 convolution over the F channels, the same sums in the same order (TFLite Micro's
        FullyConnected per row is a 1×1 ConvPerChannel with one scale), then the file's output shape."""
        units = w.shape[0]
        bias = self.const(ins[2], "bias", "FULLY_CONNECTED") if len(ins) > 2 and ins[2] >= 0 else np.zeros(units, np.float32)
        attrs = {"stride": [1, 1], "pads": [0, 0, 0, 0], "groups": 1}
        want = _chw_any(self.t(out).shape)
        if want == (units, *shape[1:]):
            node = self.emit(k, "conv2d", [ins[0]], out, attrs, w.reshape(units, -1, 1, 1), bias.astype(np.float32))
        else:  # e.g. [T, units] without keep_num_dims: the same bytes under the file's shape
            node = self.emit_named(k, "dense_rows", "conv2d", [self.name(ins[0])], f"{self.name(out)}_rows", attrs)
            node.weight, node.bias = w.reshape(units, -1, 1, 1).astype(np.float32), bias.astype(np.float32)
            self.quant_like[node.output] = self.name(out)
            flat = self.emit(k, "reshape", [], out, {"shape": list(want)})
            flat.inputs = [node.output]
        self.fuse(node, o.fusedActivationFunction if o is not None else 0, k)
        self.keep_layer(node, ins, lambda a: a.reshape(a.shape[0], a.shape[1], 1, 1))

    def transpose_conv(self, k: int, ins: list[int], out: int, o) -> None:
        """TRANSPOSE_CONV as TFLite Micro computes it (reference_integer_ops::TransposeConv): every input
        pixel times the kernel, scattered at stride s from -pad and summed in int32. The same sums
        are a stride-1 convolution with the kernel flipped over the input's pixels s apart, zero
        points between (they add 0) and K-1-pad around: a copy that inserts them, then a conv2d whose
        per-channel requantization is TFLite Micro's conv's. Every quantizer then applies to it."""
        def fail(msg: str):
            raise NupesError(f"{self.origin}: operator {k} (TRANSPOSE_CONV): {msg}")

        if len(ins) not in (3, 4) or o is None:
            fail(f"{len(ins)} inputs (output shape, weights, input and an optional bias)")
        if o.strideH < 1 or o.strideW < 1:
            fail(f"stride {(o.strideH, o.strideW)} is invalid")
        w = self.const(ins[1], "weights", "TRANSPOSE_CONV")
        if w.ndim != 4:
            fail(f"weights of shape {list(w.shape)} are not 4-D (O×H×W×I)")
        src, c_out = ins[2], w.shape[0]
        c, h, wd = self.ir_shape(src, k, "input")
        out_shape = self.shape_of(out)
        if len(out_shape) != 4 or out_shape[0] != 1 or out_shape[3] != c_out or w.shape[3] != c:
            fail(f"weights {list(w.shape)} do not fit the input {self.shape_of(src)} and the output {out_shape}")
        if self.is_const(ins[0]):
            declared = [int(v) for v in np.asarray(self.const(ins[0], "output shape", "TRANSPOSE_CONV", raw=True)).ravel()]
            if declared != out_shape:
                fail(f"output shape input {declared} differs from the output tensor's {out_shape}")
        oh, ow = out_shape[1:3]
        kh, kw = w.shape[1:3]
        if o.padding not in (self.S.Padding.SAME, self.S.Padding.VALID):
            fail(f"padding {o.padding} (SAME or VALID only)")
        # ComputePaddingHeightWidth on the output's size, as TFLite Micro's Prepare calls it: C++ division
        # (toward zero) for VALID's out size, and no padding at all when either out size is negative
        sizes = [(oh, kh, o.strideH), (ow, kw, o.strideW)]
        outs = [-(-size // stride) if o.padding == self.S.Padding.SAME else int((size - kern + stride) / stride)
                for size, kern, stride in sizes]
        pads = [0, 0] if min(outs) < 0 else [max((n - 1) * stride + kern - size, 0) // 2
                                             for n, (size, kern, stride) in zip(outs, sizes)]
        (ph, pw), (sh, sw) = pads, (o.strideH, o.strideW)
        # rows of the zero insertion: K-1-pad before the first pixel, up to the output's last window after
        zpads = [kh - 1 - ph, kw - 1 - pw, oh - 1 + ph - (h - 1) * sh, ow - 1 + pw - (wd - 1) * sw]
        try:
            shape, move = moves.zero_insertion((c, h, wd), (sh, sw), zpads)
        except moves.MoveError as e:
            fail(f"input {h}×{wd}, stride {sh}×{sw} and output {oh}×{ow}: {e}")
        inserted = self.emit_named(k, "zero_insert", "copy", [self.name(src)], f"{self.name(out)}_inserted",
                                   {"shape": shape, "moves": [move], "fill": True})
        self.quant_like[inserted.output] = self.name(src)
        flipped = np.ascontiguousarray(w[:, ::-1, ::-1, :].transpose(0, 3, 1, 2))  # OHWI → OIHW, flipped
        bias = self.const(ins[3], "bias", "TRANSPOSE_CONV") if len(ins) > 3 and ins[3] >= 0 else np.zeros(c_out, np.float32)
        node = Node(name=f"conv2d_{k}", op="conv2d", inputs=[inserted.output], output=self.name(out),
                    attrs={"stride": [1, 1], "pads": [0, 0, 0, 0], "groups": 1}, weight=flipped.astype(np.float32),
                    bias=np.asarray(bias, np.float32).reshape(-1), source=f"operator {k} in {self.origin}")
        self.nodes.append(node)
        self.producer[node.output] = node
        self.declared.append((out, node.output))
        self.fuse(node, o.fusedActivationFunction, k)
        self.keep_layer(node, [src, ins[1], ins[3] if len(ins) > 3 else -1],
                        lambda a: np.ascontiguousarray(a[:, ::-1, ::-1, :].transpose(0, 3, 1, 2)))

    def lstm(self, k: int, ins: list[int], out: int, o) -> None:
        """UNIDIRECTIONAL_SEQUENCE_LSTM as TFLite Micro runs an int8 one (lstm_eval.h): the 8 weight
        matrices, 4 biases, the hidden state's int8 and the cell state's int16 quantization, as stored."""
        T = self.S.TensorType

        def fail(msg: str):
            raise NupesError(f"{self.origin}: operator {k} (UNIDIRECTIONAL_SEQUENCE_LSTM): {msg}")

        if len(ins) != 24:
            fail(f"{len(ins)} inputs, where TFLite Micro takes 24")
        if [i for i in (9, 10, 11, 16, 17, 20, 21, 22, 23) if ins[i] >= 0]:
            fail("peephole, projection or layer-norm tensors are not supported (TFLite Micro refuses them too)")
        if [i for i in (1, 2, 3, 4, 5, 6, 7, 8, 12, 13, 14, 15, 18, 19) if ins[i] < 0]:
            fail("a gate's weights, bias or a state tensor is missing (CIFG LSTMs are not supported)")
        if o is None or o.timeMajor:
            fail("time-major sequences are not supported (batch-major only)")
        A = self.S.ActivationFunctionType
        if o.fusedActivationFunction != A.TANH:
            fail(f"cell gate activation {o.fusedActivationFunction} (TFLite Micro computes tanh only)")
        x_shape = self.shape_of(ins[0])
        if len(x_shape) != 3 or x_shape[0] != 1:
            fail(f"an input of shape {x_shape} (batch 1, [1, time, features] only)")
        h_t, c_t = self.t(ins[18]), self.t(ins[19])
        if all(self.t(i).type == T.FLOAT32 for i in (ins[0], *ins[1:9], *ins[12:16], ins[18], ins[19], out)):
            return self.float_lstm(k, ins, out, o, x_shape, fail)
        if self.t(ins[0]).type != T.INT8 or h_t.type != T.INT8 or c_t.type != T.INT16 or self.t(out).type != T.INT8:
            fail("int8 LSTMs with an int16 cell state and float32 LSTMs are supported (16x8 and hybrid ones are not)")
        q_in, q_h, q_out = self.quant_of(ins[0]), self.quant_of(ins[18]), self.quant_of(out)
        if q_in is None or q_h is None or q_out != q_h:
            fail(f"the output's quantization {q_out} must be the hidden state's {q_h} (TFLite Micro copies it)")
        cq = c_t.quantization
        if cq is None or cq.scale is None or len(cq.scale) != 1 or not float(cq.scale[0]) > 0:
            fail("the int16 cell state has no scale")
        w_codes, w_scales, biases = [], [], []
        for i in ins[1:9]:
            t = self.t(i)
            q = t.quantization
            if t.type != T.INT8 or q is None or q.scale is None or len(q.scale) != 1 or \
                    (q.zeroPoint is not None and np.any(np.asarray(q.zeroPoint) != 0)):
                fail(f"weights (tensor {i}) must be int8 with one scale and zero point 0, as TFLite Micro's LSTM "
                     "uses them")
            w_codes.append(self.const(i, "weights", "UNIDIRECTIONAL_SEQUENCE_LSTM", raw=True).astype(np.int8))
            w_scales.append(float(np.float32(q.scale[0])))
        for i in ins[12:16]:
            if self.t(i).type != T.INT32:
                fail(f"the bias (tensor {i}) must be int32")
            biases.append(self.const(i, "bias", "UNIDIRECTIONAL_SEQUENCE_LSTM", raw=True).astype(np.int64).ravel())
        self.check_lstm_shapes(w_codes, biases, x_shape, out, fail)
        w_in = np.stack(w_codes[:4]).astype(np.float32) * np.float32(w_scales[:4]).reshape(4, 1, 1)
        w_rec = np.stack(w_codes[4:]).astype(np.float32) * np.float32(w_scales[4:]).reshape(4, 1, 1)
        bias = np.stack(biases).astype(np.float64) * (np.float64(q_in[0]) * np.float64(w_scales[:4])).reshape(4, 1)
        node = self.emit(k, "lstm", [ins[0]], out, {"cell_clip": float(np.float32(o.cellClip)), "cell_act": "tanh"},
                         np.concatenate([w_in, w_rec], axis=2), bias.astype(np.float32))
        self.file_quant.lstms[node.name] = {
            "w_in": np.stack(w_codes[:4]), "w_rec": np.stack(w_codes[4:]), "bias": np.stack(biases),
            "w_scales": w_scales, "input": q_in, "hidden": q_h, "cell_scale": float(np.float32(cq.scale[0]))}

    def check_lstm_shapes(self, ws: list, bs: list, x_shape, out: int, fail) -> None:
        """4 input weights (units x features), 4 recurrent (units x units), 4 biases, output [1, T, units]."""
        units, feats = ws[0].shape[0] if ws[0].ndim == 2 else -1, x_shape[2]
        if any(w.shape != (units, feats) for w in ws[:4]) or any(w.shape != (units, units) for w in ws[4:]) \
                or any(b.shape != (units,) for b in bs) or self.shape_of(out) != [1, x_shape[1], units]:
            fail(f"weights {[list(w.shape) for w in ws]} and biases do not fit {feats} features and the output "
                 f"{self.shape_of(out)}")

    def float_lstm(self, k: int, ins: list[int], out: int, o, x_shape, fail) -> None:
        """A float32 LSTM: its weights, quantized like any model's (quant/stateful.py), to TFLite Micro's int8 LSTM."""
        ws = [self.const(i, "weights", "UNIDIRECTIONAL_SEQUENCE_LSTM") for i in ins[1:9]]
        bs = [self.const(i, "bias", "UNIDIRECTIONAL_SEQUENCE_LSTM").ravel() for i in ins[12:16]]
        self.check_lstm_shapes(ws, bs, x_shape, out, fail)
        weight = np.concatenate([np.stack(ws[:4]), np.stack(ws[4:])], axis=2).astype(np.float32)
        self.emit(k, "lstm", [ins[0]], out, {"cell_clip": float(np.float32(o.cellClip)), "cell_act": "tanh"},
                  weight, np.stack(bs).astype(np.float32))

    def maximum_minimum(self, k: int, name: str, ins: list[int], out: int) -> None:
        """Two tensors of one shape (compared on their codes, as TFLite Micro does), or a tensor and one
        constant value (a clamp: tf.maximum(x, 0.0) and the like)."""
        where = f"{self.origin}: operator {k} ({name})"
        consts = [i for i in ins if self.is_const(i)]
        qo = self.quant_of(out)
        for i in ins:
            qi = self.quant_of(i)
            if qi is not None and qo is not None and qi != qo:
                raise NupesError(f"{where}: operand tensor {i} is quantized {qi}, the output {qo}: TFLite Micro compares "
                                 "the codes, so nupes-edge needs one quantization for all")
        if not consts:
            self.emit(k, name.lower(), ins, out)
            return
        if len(consts) == 2:
            raise NupesError(f"{where}: both operands are constants")
        value = self.const(consts[0], "constant operand", name)
        if value.size != 1:
            raise NupesError(f"{where}: a constant operand of shape {list(value.shape)} (only one value, or a tensor of "
                             "the same shape, is supported)")
        x = ins[1] if consts[0] == ins[0] else ins[0]
        v = float(value.ravel()[0])
        self.emit(k, "clamp", [x], out, {"lo": v, "hi": None} if name == "MAXIMUM" else {"lo": None, "hi": v})

    def svdf(self, k: int, ins: list[int], outs: list[int], o) -> None:
        """SVDF as TFLite Micro runs an int8 one (svdf_common.cc, EvalIntegerSvdfReference): int8 feature
        weights, int16 (or int8) time weights and activation state, an int32 bias, as stored."""
        from ..intref.svdf import bias_scale_ok
        T, A = self.S.TensorType, self.S.ActivationFunctionType

        def fail(msg: str):
            raise NupesError(f"{self.origin}: operator {k} (SVDF): {msg}")

        if len(ins) != 5 or len(outs) != 1 or min(ins[:3]) < 0 or ins[4] < 0:
            fail(f"{len(ins)} inputs and {len(outs)} outputs, where TFLite Micro takes input, feature weights, "
                 "time weights, bias and activation state, and gives one output")
        if ins[3] < 0:
            fail("no bias: TFLite Micro's int8 SVDF reads the bias's scale in Prepare (it cannot run the file)")
        x, wf_t, wt_t, b_t, st_t, y = (self.t(i) for i in (*ins, outs[0]))
        if x.type != T.INT8 or wf_t.type != T.INT8 or y.type != T.INT8 or b_t.type != T.INT32:
            fail("only int8 SVDFs are supported (int8 input, feature weights and output, int32 bias; float "
                 "SVDFs are not)")
        if (wt_t.type, st_t.type) not in ((T.INT16, T.INT16), (T.INT8, T.INT8)):
            fail("the time weights and the activation state must both be int16 or both int8 (TFLite Micro "
                 "reads the state as the time weights' type)")
        if not st_t.isVariable or self.is_const(ins[4]):
            fail("the activation state (input 4) must be a variable tensor")
        rank = int(o.rank) if o is not None else 0
        x_shape, wf_shape, wt_shape = self.shape_of(ins[0]), self.shape_of(ins[1]), self.shape_of(ins[2])
        if len(x_shape) != 2 or x_shape[0] != 1:
            fail(f"an input of shape {x_shape} (batch 1, [1, input size] only)")
        if len(wf_shape) != 2 or len(wt_shape) != 2 or rank < 1 or wf_shape[0] % rank or wf_shape[1] != x_shape[1] \
                or wt_shape[0] != wf_shape[0] or wt_shape[1] < 1:
            fail(f"feature weights {wf_shape}, time weights {wt_shape} and rank {rank} do not fit an input of "
                 f"{x_shape[1]} (filters a multiple of the rank)")
        filters, memory = wf_shape[0], wt_shape[1]
        units = filters // rank
        if self.shape_of(outs[0]) != [1, units] or self.shape_of(ins[3]) != [units] \
                or self.shape_of(ins[4]) != [1, filters * memory]:
            fail(f"output {self.shape_of(outs[0])}, bias {self.shape_of(ins[3])} and state {self.shape_of(ins[4])} "
                 f"do not fit {units} units of {filters} filters x {memory} steps")
        act = {A.NONE: "none", A.RELU: "relu"}.get(o.fusedActivationFunction)
        q_in, q_out = self.quant_of(ins[0]), self.quant_of(outs[0])
        if act is None:
            fail(f"fused activation {o.fusedActivationFunction}: TFLite Micro's int8 SVDF applies none (only the "
                 "int8 range), so only NONE, and RELU on an output of zero point -128, are supported")
        if q_in is None or q_out is None:
            fail("the input and output need one scale and zero point each")
        if act == "relu" and q_out[1] != -128:
            fail(f"RELU on an output of zero point {q_out[1]}: TFLite Micro's int8 SVDF does not apply the "
                 "activation, only the int8 range, which is the ReLU only at zero point -128")
        scales = {}
        for i, what in ((ins[1], "feature weights"), (ins[2], "time weights"), (ins[3], "bias"),
                        (ins[4], "activation state")):
            q = self.t(i).quantization
            if q is None or q.scale is None or len(q.scale) != 1 or not (math.isfinite(float(q.scale[0]))
                                                                       and float(q.scale[0]) > 0):
                fail(f"the {what} (tensor {i}) needs one positive scale")
            zp = int(q.zeroPoint[0]) if q.zeroPoint is not None and len(q.zeroPoint) else 0
            if what != "activation state" and zp != 0:
                fail(f"the {what} (tensor {i}) has zero point {zp}; TFLite Micro's SVDF reads them as 0")
            scales[what] = (float(np.float32(q.scale[0])), zp)
        state_zp = scales["activation state"][1]
        bits = 16 if st_t.type == T.INT16 else 8
        if bits == 16 and state_zp != 0:
            fail(f"an int16 activation state of zero point {state_zp}: TFLite Micro resets it to 0 and assumes 0")
        if not -(1 << (bits - 1)) <= state_zp < 1 << (bits - 1):
            fail(f"the activation state's zero point {state_zp} is outside int{bits}")
        s_state, s_time = scales["activation state"][0], scales["time weights"][0]
        if not bias_scale_ok(scales["bias"][0], s_state, s_time):
            fail(f"the bias's scale {scales['bias'][0]:g} is not the state's times the time weights' "
                 f"({s_state:g} x {s_time:g}), as TFLite Micro's Prepare requires")
        w_feature = self.const(ins[1], "feature weights", "SVDF", raw=True).astype(np.int8)
        if bits == 16:
            t = self.t(ins[2])
            buf = self.model.buffers[t.buffer].data if t.buffer < len(self.model.buffers) else None
            if buf is None or len(buf) != 2 * filters * memory:
                fail(f"the time weights (tensor {ins[2]}) are not {filters} x {memory} stored int16 values")
            w_time = np.frombuffer(np.asarray(buf, np.uint8).tobytes(), "<i2").reshape(filters, memory)
        else:
            w_time = self.const(ins[2], "time weights", "SVDF", raw=True).astype(np.int16)
        bias = self.const(ins[3], "bias", "SVDF", raw=True).astype(np.int64).ravel()
        s_wf = scales["feature weights"][0]
        weight = np.concatenate([w_feature.astype(np.float32) * np.float32(s_wf),
                                 w_time.astype(np.float32) * np.float32(s_time)], axis=1)
        node = self.emit(k, "svdf", [ins[0]], outs[0], {"rank": rank, "act": act}, weight,
                         # TFLite Micro adds the int32 bias on the state x time grid, whatever its own
                         # scale says (Prepare only checks it within 1e-5, an absolute tolerance)
                         (bias.astype(np.float64) * (np.float64(np.float32(s_state)) *
                                                     np.float64(np.float32(s_time)))).astype(np.float32))
        self.file_quant.svdfs[node.name] = {
            "w_feature": w_feature, "w_time": w_time.astype(np.int16), "bias": bias, "state_bits": bits,
            "feature_scale": s_wf, "time_scale": s_time, "state": (s_state, state_zp), "input": q_in,
            "output": q_out}

    def reduce(self, k: int, name: str, ins: list[int], out: int, o) -> None:
        """REDUCE_MAX (the largest code; TFLite Micro requires the input's scale at the output) or MEAN
        (QuantizedMeanOrSum, to its own output quantization) over any axes, either keep_dims."""
        try:
            x = self.index(ins[0])
            rank = x.ndim
            axes = sorted({int(v) % max(rank, 1) for v in self.const(ins[1], "axes", name, raw=True).ravel()})
            kept = [a for a in range(rank) if a not in axes]
            want = [x.shape[a] if a in kept else 1 for a in range(rank)] if o is not None and o.keepDims \
                else [x.shape[a] for a in kept]
            if self.shape_of(out) != want and math.prod(self.shape_of(out)) != math.prod(want):
                raise ValueError(f"output shape {self.shape_of(out)}, expected {want}")
            reduce = moves.reduce_move(x.transpose(kept + axes), len(kept))
        except (ValueError, IndexError) as e:
            raise NupesError(f"{self.origin}: operator {k} ({name}): {str(e)[:200]}") from None
        qi, qo = self.quant_of(ins[0]), self.quant_of(out)
        if name == "MEAN":
            self.emit(k, "mean_reduce", [ins[0]], out, {"shape": list(_chw_any(self.shape_of(out))), "reduce": reduce})
            return
        if qi is not None and qo is not None and qi[0] != qo[0]:
            raise NupesError(f"{self.origin}: operator {k} (REDUCE_MAX): output scale {qo[0]} differs from the input's "
                             f"{qi[0]} (TFLite Micro refuses this too)")
        self.emit(k, "reduce_max", [ins[0]], out, {"shape": list(_chw_any(self.shape_of(out))), "reduce": reduce})

    def run(self) -> Graph:
        ops = self.sg.operators or []
        self.fold(ops)
        self.check_supported(ops)
        for op in ops:
            for i in list(op.inputs if op.inputs is not None else []):
                self.users[int(i)] = self.users.get(int(i), 0) + 1
        for k, op in enumerate(ops):
            if k in self.folded_ops:
                continue
            name = self.op_name(op)
            ins = [int(i) for i in (op.inputs if op.inputs is not None else [])]
            outs = [int(i) for i in (op.outputs if op.outputs is not None else [])]
            o = op.builtinOptions
            if self.softmax_of is not None and name not in AFTER_SOFTMAX:
                raise NupesError(f"{self.origin}: operator {k} ({name}) follows SOFTMAX; Softmax must be the final "
                                 "op (a QUANTIZE, DEQUANTIZE or RESHAPE may follow it)")
            if name in ("QUANTIZE", "DEQUANTIZE"):
                qi, qo = self.quant_of(ins[0]), self.quant_of(outs[0])
                if self.t(outs[0]).type == self.S.TensorType.UINT8:
                    # a uint8 model output: kept when it only moves the zero point by 128 (the same bytes
                    # with the top bit flipped); the model then gives the int8 codes
                    q = self.t(outs[0]).quantization
                    su = float(np.float32(q.scale[0])) if q is not None and q.scale is not None and len(q.scale) else None
                    zu = int(q.zeroPoint[0]) if q is not None and q.zeroPoint is not None and len(q.zeroPoint) else 0
                    model_outputs = [int(v) for v in (self.sg.outputs if self.sg.outputs is not None else [])]
                    if name != "QUANTIZE" or qi is None or su != qi[0] or zu - 128 != qi[1] or outs[0] not in model_outputs:
                        raise NupesError(f"{self.origin}: operator {k} ({name}): a uint8 output is supported as the model's "
                                         f"output, from an int8 tensor of the same scale and its zero point moved by 128 "
                                         f"(here int8 {qi} -> uint8 {su}, {zu})")
                    self.alias[outs[0]] = self.alias.get(ins[0], ins[0])
                    continue
                if self.t(ins[0]).type == self.S.TensorType.UINT8:
                    # a uint8 model input (ST's model zoo): kept when the QUANTIZE only moves the zero point
                    # by 128 (the same bytes with the top bit flipped); the model then takes the int8 codes
                    q = self.t(ins[0]).quantization
                    su = float(np.float32(q.scale[0])) if q is not None and q.scale is not None and len(q.scale) else None
                    zu = int(q.zeroPoint[0]) if q is not None and q.zeroPoint is not None and len(q.zeroPoint) else 0
                    if name != "QUANTIZE" or qo is None or su != qo[0] or zu - 128 != qo[1]:
                        raise NupesError(f"{self.origin}: operator {k} ({name}): a uint8 input is supported when its "
                                         "QUANTIZE to int8 keeps the scale and moves the zero point by 128 "
                                         f"(here uint8 {su}, {zu} -> int8 {qo})")
                    self.alias[outs[0]] = self.alias.get(ins[0], ins[0])
                    continue
                if name == "QUANTIZE" and qi is not None and qo is not None and qi != qo:
                    if self.softmax_of is not None:
                        raise NupesError(f"{self.origin}: operator {k} (QUANTIZE) requantizes the final SOFTMAX's "
                                         "probabilities; not supported")
                    self.emit(k, "requantize", [ins[0]], outs[0])  # int8 -> int8 with another scale
                else:  # float <-> int8 at the model's edges, or an int8 copy: the same values
                    self.alias[outs[0]] = self.alias.get(ins[0], ins[0])
            elif name == "PAD":
                p = self.const(ins[1], "paddings", name, raw=True).astype(int)
                if p.shape != (4, 2) or p[0].any() or p[3].any():
                    raise NupesError(f"{self.origin}: operator {k} (PAD): only spatial padding of an N×H×W×C tensor is supported")
                self.pads[outs[0]] = (ins[0], (int(p[1, 0]), int(p[2, 0]), int(p[1, 1]), int(p[2, 1])))
            elif name in ("CONV_2D", "DEPTHWISE_CONV_2D"):
                w = self.const(ins[1], "weights", name)
                if o is None or o.dilationHFactor != 1 or o.dilationWFactor != 1:
                    raise NupesError(f"{self.origin}: operator {k} ({name}): dilation "
                                     f"{(o.dilationHFactor, o.dilationWFactor) if o else '?'} is not supported (only 1)")
                if o.strideH < 1 or o.strideW < 1:
                    raise NupesError(f"{self.origin}: operator {k} ({name}): stride {(o.strideH, o.strideW)} is invalid")
                if w.ndim != 4:
                    raise NupesError(f"{self.origin}: operator {k} ({name}): weights of shape {list(w.shape)} are not 4-D")
                if name == "CONV_2D":
                    w = w.transpose(0, 3, 1, 2)  # OHWI → OIHW
                else:
                    w = w.transpose(3, 0, 1, 2)  # 1HWO → O1HW
                kh, kw = w.shape[2:]
                src, pads = self.spatial_pads(o, ins[0], kh, kw, o.strideH, o.strideW)
                bias = self.const(ins[2], "bias", name) if len(ins) > 2 and ins[2] >= 0 else np.zeros(w.shape[0], np.float32)
                c_in = self.ir_shape(src, k, "input")[0]
                groups = 1 if name == "CONV_2D" else c_in
                if name == "DEPTHWISE_CONV_2D" and o.depthMultiplier not in (0, w.shape[0] // max(c_in, 1)):
                    raise NupesError(f"{self.origin}: operator {k} (DEPTHWISE_CONV_2D): depth multiplier "
                                     f"{o.depthMultiplier} disagrees with {w.shape[0]} output channels over {c_in} inputs")
                node = self.emit(k, "conv2d", [src], outs[0], {"stride": [o.strideH, o.strideW], "pads": pads,
                                                              "groups": groups}, w, bias.astype(np.float32))
                self.fuse(node, o.fusedActivationFunction, k)
                order = (0, 3, 1, 2) if name == "CONV_2D" else (3, 0, 1, 2)
                self.keep_layer(node, ins, lambda a: a.transpose(order))
            elif name == "FULLY_CONNECTED":
                w = self.const(ins[1], "weights", name)
                if w.ndim != 2:
                    raise NupesError(f"{self.origin}: operator {k} (FULLY_CONNECTED): weights of shape {list(w.shape)} "
                                     "are not 2-D")
                src = ins[0]
                shape = self.ir_shape(src, k, "input")
                rows_out = len(_chw_any(self.t(outs[0]).shape)) == 3  # keep_num_dims on [1, 1, F]: (units, 1, 1)
                if len(shape) == 3 and shape[0] == w.shape[1] and (math.prod(shape) != w.shape[1] or rows_out):
                    self.dense_rows(k, ins, outs[0], o, w, shape)  # one row per pixel / time step
                    continue
                if len(shape) != 1:  # TFLite flattens every dimension but the last into rows
                    if math.prod(shape) != w.shape[1]:
                        raise NupesError(f"{self.origin}: operator {k} (FULLY_CONNECTED): an input of shape "
                                         f"{[int(v) for v in self.t(src).shape]} makes {math.prod(shape) // max(w.shape[1], 1)} "
                                         f"rows of {w.shape[1]}; only one row (batch 1) is supported")
                    src_name = self.emit_named(k, "reshape_rows", "reshape", [self.name(src)], f"{self.name(src)}_rows",
                                               {"shape": [int(w.shape[1])]}).output
                    self.quant_like[src_name] = self.name(src)
                else:
                    src_name = None
                bias = self.const(ins[2], "bias", name) if len(ins) > 2 and ins[2] >= 0 else np.zeros(w.shape[0], np.float32)
                node = self.emit(k, "linear", [src], outs[0], {}, w, bias.astype(np.float32))
                if src_name is not None:
                    node.inputs = [src_name]
                self.fuse(node, o.fusedActivationFunction if o is not None else 0, k)
                self.keep_layer(node, ins, lambda a: a)
            elif name == "ADD":
                node = self.emit(k, "add", ins[:2], outs[0], {})
                self.fuse(node, o.fusedActivationFunction if o is not None else 0, k)
            elif name == "MUL":
                for i in ins[:2]:
                    t = self.t(i)
                    if t.buffer < len(self.model.buffers) and self.model.buffers[t.buffer].data is not None \
                            and len(self.model.buffers[t.buffer].data):
                        raise NupesError(f"{self.origin}: operator {k} (MUL): multiplying by a constant is not "
                                         "supported (only tensor x tensor)")
                node = self.emit(k, "mul", ins[:2], outs[0], {})
                self.fuse(node, o.fusedActivationFunction if o is not None else 0, k)
            elif name in ("MAX_POOL_2D", "AVERAGE_POOL_2D"):
                kh, kw = o.filterHeight, o.filterWidth
                if min(kh, kw, o.strideH, o.strideW) < 1:
                    raise NupesError(f"{self.origin}: operator {k} ({name}): filter {(kh, kw)} or stride "
                                     f"{(o.strideH, o.strideW)} is invalid")
                src, pads = self.spatial_pads(o, ins[0], kh, kw, o.strideH, o.strideW)
                c, h, w = self.ir_shape(src, k, "input")
                if name == "AVERAGE_POOL_2D" and (kh, kw) == (h, w) and not any(pads):
                    node = self.emit(k, "global_avgpool", [src], outs[0])
                else:
                    node = self.emit(k, "maxpool2d" if name == "MAX_POOL_2D" else "avgpool2d", [src], outs[0],
                                     {"kernel": [kh, kw], "stride": [o.strideH, o.strideW], "pads": pads})
                if o.fusedActivationFunction:
                    raise NupesError(f"{self.origin}: operator {k} ({name}): a fused activation on a pool is not supported")
            elif name == "MEAN":
                rank = len(self.t(ins[0]).shape)
                axes = sorted({int(v) % max(rank, 1) for v in self.const(ins[1], "axes", name, raw=True).ravel()})
                spatial = {4: [1, 2], 3: [1]}.get(rank)
                if axes != spatial:  # any other axes: the general walk (the same arithmetic)
                    self.reduce(k, "MEAN", ins, outs[0], o)
                    continue
                keep = o is not None and o.keepDims
                if keep:
                    self.emit(k, "mean", [ins[0]], outs[0])
                else:  # the pooled C×1×1 tensor, then the file's output shape
                    c = self.ir_shape(ins[0], k, "input")[0]
                    pooled = self.emit_named(k, "mean", "mean", [self.name(ins[0])], f"{self.name(outs[0])}_pooled")
                    flat = self.emit(k, "reshape", [], outs[0], {"shape": [c]})
                    flat.inputs = [pooled.output]
                    self.quant_like[pooled.output] = self.name(outs[0])
            elif name in ("RESHAPE", "SQUEEZE", "EXPAND_DIMS"):
                self.reshape(k, ins[0], outs[0])
            elif name in ("RELU", "RELU6"):
                self.emit(k, name.lower(), [ins[0]], outs[0])
            elif name == "CONCATENATION":
                rank = len(self.t(outs[0]).shape)
                if o is None or o.fusedActivationFunction:
                    raise NupesError(f"{self.origin}: operator {k} (CONCATENATION): a fused activation is not supported")
                if any(len(self.shape_of(i)) != rank for i in ins):
                    raise NupesError(f"{self.origin}: operator {k} (CONCATENATION): inputs of shapes "
                                     f"{[self.shape_of(i) for i in ins]} for an output of rank {rank}")
                try:
                    channels = o.axis in (rank - 1, -1) and all(_chw(self.t(i).shape) for i in [*ins, outs[0]])
                except ValueError:
                    channels = False
                if channels:  # along the channels of tensors the IR holds as they are: the HWC kernel
                    self.emit(k, "concat", ins, outs[0])
                else:
                    self.moves_op(k, name, ins, outs, o)
            elif name in MOVE_OPS:
                self.moves_op(k, name, ins, outs, o)
            elif name == "REDUCE_MAX":
                self.reduce(k, name, ins, outs[0], o)
            elif name in ("MAXIMUM", "MINIMUM"):
                self.maximum_minimum(k, name, ins[:2], outs[0])
            elif name in ("LOGISTIC", "TANH", "HARD_SWISH"):
                self.check_fixed_output(k, name, outs[0])
                self.emit(k, {"LOGISTIC": "sigmoid", "TANH": "tanh", "HARD_SWISH": "hardswish"}[name], [ins[0]], outs[0])
            elif name == "LEAKY_RELU":
                self.emit(k, "leaky_relu", [ins[0]], outs[0], {"alpha": float(np.float32(o.alpha)) if o else 0.2})
            elif name == "TRANSPOSE_CONV":
                self.transpose_conv(k, ins, outs[0], o)
            elif name == "UNIDIRECTIONAL_SEQUENCE_LSTM":
                self.lstm(k, ins, outs[0], o)
            elif name == "SVDF":
                self.svdf(k, ins, outs, o)
            elif name == "SOFTMAX":
                self.check_fixed_output(k, name, outs[0])
                self.softmax_of = ins[0]
                self.softmax_out = outs[0]
                self.softmax_beta = float(o.beta) if o is not None else 1.0
                self.alias[outs[0]] = self.alias.get(ins[0], ins[0])
            else:  # pragma: no cover - check_supported refused it
                raise NupesError(f"{self.origin}: operator {k} ({name}) is not supported")
        if len(self.sg.inputs) != 1 or len(self.sg.outputs) != 1:
            raise NupesError(f"{self.origin}: only models with one input and one output are supported")
        inp = int(self.sg.inputs[0])
        graph = Graph(input_name=self.name(inp), input_shape=self.ir_shape(inp, 0, "model input"),
                      output_name=self.name(int(self.sg.outputs[0])), nodes=self.nodes,
                      output_softmax=self.softmax_of is not None, input_layout="NHWC")
        graph.softmax_beta = self.softmax_beta
        infer_shapes(graph)
        self.check_declared(graph)
        self.keep_activations()
        if self.file_quant.layers or self.file_quant.lstms or self.file_quant.svdfs or any(n.op == "requantize" for n in self.nodes):
            graph.file_quant = self.file_quant
        return graph

    def check_declared(self, graph: Graph) -> None:
        """Every shape the file declares for an operator's output equals the one computed from its
        inputs and parameters (TFLite Micro would compute the latter, or refuse the file)."""
        for i, tname in self.declared:
            if tname not in graph.shapes:
                continue
            declared = _chw_any(self.t(i).shape)
            if declared != graph.shapes[tname]:
                node = self.producer.get(tname)
                where = node.source if node is not None else f"tensor {i}"
                raise NupesError(f"{self.origin}: {where}: the output's declared shape "
                                 f"{[int(v) for v in self.t(i).shape]} differs from the computed "
                                 f"{list(graph.shapes[tname])} (C×H×W); the file is inconsistent")


def operator_table_markdown() -> str:
    """docs/tflite.md's table of operators, from OPERATORS (tests check the docs hold exactly this)."""
    rows = ["| TFLite operator | becomes | accepts | int8 arithmetic (TFLite Micro, tensorflow/lite/micro/) |",
            "|---|---|---|---|"]
    rows += [f"| {name} | {ir} | {accepts} | {source} |" for name, (ir, accepts, source) in OPERATORS.items()]
    return "\n".join(rows) + "\n"


def import_tflite_bytes(data: bytes, origin: str = "model.tflite") -> Graph:
    if len(data) < 8 or data[4:8] != b"TFL3":
        raise NupesError(f"{origin}: not a TFLite flatbuffer (no 'TFL3' identifier)")
    try:
        graph = _Reader(data, origin).run()
        if graph.file_quant is not None:  # an int8 file: the oracle of the model made from it
            graph.source_tflite = bytes(data)
        return graph
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
