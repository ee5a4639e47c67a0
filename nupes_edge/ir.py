"""The graph IR: a typed, shape-checked list of nodes in execution order.

Semantics follow PyTorch: activations are NCHW (shapes exclude the batch dimension),
conv weights are OIHW (I = in_channels / groups), linear weights are (out, in),
Flatten flattens in C, H, W order (PyTorch's), Reshape keeps the device's bytes (H, W, C order for a
C×H×W tensor: TFLite's RESHAPE of an N×H×W×C tensor). BatchNorm is already folded, ReLU/ReLU6 are fused
into the producing conv/linear/add where possible (attribute ``act``).
"""
from __future__ import annotations

import math

from dataclasses import dataclass, field

import numpy as np

from . import moves
from .errors import NupesError

ACTIVATIONS = ("none", "relu", "relu6")
# Elementwise int8 activations computed by a 256-entry table (intref/lut_ops.py)
TABLE_OPS = ("sigmoid", "tanh", "hardswish", "leaky_relu", "requantize")
OPS = ("conv2d", "linear", "maxpool2d", "avgpool2d", "global_avgpool", "mean", "add", "mul", "relu", "relu6", "flatten",
       "reshape", "softmax", "concat", "copy", "reduce_max", "mean_reduce", "maximum", "minimum", "clamp", "lstm",
       "svdf", *TABLE_OPS)
# Ops that only give their input's bytes another shape: no kernel, no copy (the C plan aliases them)
ALIAS_OPS = ("flatten", "reshape")
WEIGHT_OPS = ("conv2d", "linear")


@dataclass
class Node:
    name: str
    op: str
    inputs: list[str]
    output: str
    attrs: dict = field(default_factory=dict)
    weight: np.ndarray | None = None  # float32
    bias: np.ndarray | None = None  # float32, always present for weight ops
    source: str = ""  # where the node came from (module path / file:line), for error messages

    @property
    def act(self) -> str:
        return self.attrs.get("act", "none")


@dataclass
class Graph:
    input_name: str
    input_shape: tuple[int, ...]
    output_name: str
    nodes: list[Node]
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    # True when the source model ended in Softmax: the quantized graph outputs the logits and
    # the softmax is applied by the caller (argmax is unchanged by it).
    output_softmax: bool = False
    # how the user's data holds an input: "NCHW" (PyTorch) or "NHWC" (a .tflite model); the graph
    # itself is always C x H x W, and data.load_data transposes
    input_layout: str = "NCHW"
    # An int8 .tflite's own quantization (importers/tflite_import.FileQuant), kept so that quantizing
    # can reproduce the file exactly; None for float models. Not stored in model.nq.
    file_quant: object = None
    softmax_beta: float = 1.0  # the source's final Softmax(beta · x), when output_softmax
    # The bytes of the int8 .tflite the graph was imported from (oracle.py runs it under TFLite Micro)
    source_tflite: bytes | None = None

    def weight_nodes(self) -> list[Node]:
        return [n for n in self.nodes if n.op in WEIGHT_OPS]

    def node(self, name: str) -> Node:
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(name)

    def consumers(self, tensor: str) -> list[Node]:
        return [n for n in self.nodes if tensor in n.inputs]

    @property
    def output_shape(self) -> tuple[int, ...]:
        return self.shapes[self.output_name]


def conv_out_size(size: int, k: int, stride: int, pad_lo: int, pad_hi: int) -> int:
    return (size + pad_lo + pad_hi - k) // stride + 1


def _fail(node: Node, msg: str) -> NupesError:
    where = f" ({node.source})" if node.source else ""
    return NupesError(f"layer '{node.name}' [{node.op}]{where}: {msg}")


# Attributes of the kinds every op shares: lists of ints, an int, a number (an edited .nq is untrusted)
_INT_LISTS = {"stride": 2, "pads": 4, "kernel": 2}


def _check_attr_types(node: Node) -> None:
    for key, n in _INT_LISTS.items():
        v = node.attrs.get(key)
        if key in node.attrs and not (isinstance(v, (list, tuple)) and len(v) == n and all(
                isinstance(x, (int, np.integer)) and not isinstance(x, bool) and abs(x) <= 1 << 16 for x in v)):
            raise _fail(node, f"attribute {key} = {str(v)[:40]} is not a list of {n} integers")
    g = node.attrs.get("groups", 1)
    if not (isinstance(g, (int, np.integer)) and not isinstance(g, bool) and g >= 1):
        raise _fail(node, f"attribute groups = {str(g)[:40]} is not a positive integer")
    for key in ("alpha", "beta"):
        v = node.attrs.get(key, 0.5)
        if not (isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)):
            raise _fail(node, f"attribute {key} = {str(v)[:40]} is not a finite number")


def infer_node_shape(node: Node, in_shapes: list[tuple[int, ...]]) -> tuple[int, ...]:
    """Output shape of one node; raises NupesError on inconsistent shapes or attributes."""
    a = node.attrs
    if node.op not in OPS:
        raise _fail(node, f"unknown op '{node.op}'")
    _check_attr_types(node)
    if node.op in WEIGHT_OPS or node.op in ("add", "mul"):
        if a.get("act", "none") not in ACTIVATIONS:
            raise _fail(node, f"unknown fused activation {a.get('act')!r}")
    if node.op == "conv2d":
        (s,) = in_shapes
        if len(s) != 3:
            raise _fail(node, f"expects a C×H×W input, got shape {s}")
        c, h, w = s
        o, ig, kh, kw = node.weight.shape
        g = a["groups"]
        if c % g or o % g or ig * g != c:
            raise _fail(node, f"weight {node.weight.shape} with groups={g} does not fit {c} input channels")
        if g not in (1, c):
            raise _fail(node, f"grouped convolution with groups={g} (only 1 or depthwise) is not supported")
        pt, pl, pb, pr = a["pads"]
        sh, sw = a["stride"]
        if min(pt, pl, pb, pr) < 0 or min(sh, sw) < 1:
            raise _fail(node, f"invalid pads {a['pads']} or stride {a['stride']}")
        oh, ow = conv_out_size(h, kh, sh, pt, pb), conv_out_size(w, kw, sw, pl, pr)
        if oh < 1 or ow < 1:
            raise _fail(node, f"kernel {kh}×{kw} does not fit input {h}×{w}")
        return (o, oh, ow)
    if node.op == "linear":
        (s,) = in_shapes
        if len(s) != 1 or s[0] != node.weight.shape[1]:
            raise _fail(node, f"weight {node.weight.shape} does not fit input shape {s}")
        return (node.weight.shape[0],)
    if node.op in ("maxpool2d", "avgpool2d"):
        (s,) = in_shapes
        if len(s) != 3:
            raise _fail(node, f"expects a C×H×W input, got shape {s}")
        c, h, w = s
        kh, kw = a["kernel"]
        sh, sw = a["stride"]
        pt, pl, pb, pr = a["pads"]
        if node.op == "avgpool2d" and any(a["pads"]):
            raise _fail(node, "average pooling with padding is not supported (use padding=0)")
        if max(pt, pb) > kh // 2 or max(pl, pr) > kw // 2:
            raise _fail(node, f"padding {a['pads']} exceeds half the kernel {kh}×{kw}")
        oh, ow = conv_out_size(h, kh, sh, pt, pb), conv_out_size(w, kw, sw, pl, pr)
        if oh < 1 or ow < 1:
            raise _fail(node, f"kernel {kh}×{kw} does not fit input {h}×{w}")
        return (c, oh, ow)
    if node.op in ("global_avgpool", "mean"):  # mean: TFLite's MEAN over H and W, rescaling to its own output
        (s,) = in_shapes
        if len(s) != 3:
            raise _fail(node, f"expects a C×H×W input, got shape {s}")
        return (s[0], 1, 1)
    if node.op == "add":
        s1, s2 = in_shapes
        if s1 != s2:
            raise _fail(node, f"operand shapes differ: {s1} vs {s2} (broadcasting is not supported)")
        return s1
    if node.op == "mul":  # elementwise, or one operand a per-channel C x 1 x 1 (squeeze-and-excite)
        s1, s2 = in_shapes
        if s1 == s2:
            return s1
        for big, small in ((s1, s2), (s2, s1)):
            if len(big) == 3 and tuple(small) == (big[0], 1, 1):
                return big
        raise _fail(node, f"operand shapes {s1} and {s2}: equal shapes, or one C×1×1 against C×H×W, only")
    if node.op in ("relu", "relu6"):
        return in_shapes[0]
    if node.op == "lstm":  # a sequence of T steps of F features (F x 1 x T) -> T hidden states (S x 1 x T)
        (s,) = in_shapes
        w = node.weight
        if len(s) != 3 or s[1] != 1:
            raise _fail(node, f"expects a sequence (F×1×T), got shape {s}")
        if w is None or w.ndim != 3 or w.shape[0] != 4 or w.shape[2] != s[0] + w.shape[1]:
            raise _fail(node, f"weight {None if w is None else w.shape} is not (4 gates, units, {s[0]} inputs + units)")
        if node.bias is None or tuple(node.bias.shape) != w.shape[:2]:
            raise _fail(node, f"bias {None if node.bias is None else node.bias.shape} is not (4 gates, units)")
        if a.get("cell_act", "tanh") not in ("tanh", "sigmoid"):
            raise _fail(node, f"cell gate activation {str(a.get('cell_act'))[:20]!r} (tanh or sigmoid only)")
        return (w.shape[1], 1, s[2])
    if node.op == "svdf":  # I inputs -> U units; weight (F, I + M): the feature then the time weights, F = U x rank
        (s,) = in_shapes
        w, rank = node.weight, a.get("rank")
        if len(s) != 1:
            raise _fail(node, f"expects a vector of inputs, got shape {s}")
        if not isinstance(rank, int) or isinstance(rank, bool) or rank < 1:
            raise _fail(node, f"rank {str(rank)[:20]} is not a positive integer")
        if w is None or w.ndim != 2 or w.shape[0] % rank or w.shape[1] <= s[0]:
            raise _fail(node, f"weight {None if w is None else w.shape} is not (filters, {s[0]} inputs + memory), "
                              f"filters a multiple of rank {rank}")
        if node.bias is None or tuple(node.bias.shape) != (w.shape[0] // rank,):
            raise _fail(node, f"bias {None if node.bias is None else node.bias.shape} is not ({w.shape[0] // rank},)")
        if a.get("act", "none") not in ("none", "relu"):
            raise _fail(node, f"activation {str(a.get('act'))[:20]!r} (none or relu only)")
        return (w.shape[0] // rank,)
    if node.op == "clamp":  # MAXIMUM / MINIMUM with a constant: max(x, lo) and/or min(x, hi), in real values
        for key in ("lo", "hi"):
            v = a.get(key)
            if v is not None and not (isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)):
                raise _fail(node, f"clamp bound {key} = {str(v)[:40]} is not a finite number or null")
        return in_shapes[0]
    if node.op in ("maximum", "minimum"):  # elementwise, both operands one shape (TFLite compares the codes)
        s1, s2 = in_shapes
        if s1 != s2:
            raise _fail(node, f"operand shapes {s1} and {s2} differ (broadcasting is not supported)")
        return s1
    if node.op == "concat":  # along the channels (C of C x H x W, or a vector's only axis)
        if len(in_shapes) < 2 or len({s[1:] for s in in_shapes}) != 1 or len({len(s) for s in in_shapes}) != 1:
            raise _fail(node, f"concatenates along channels only, inputs of equal H x W: got {in_shapes}")
        return (sum(s[0] for s in in_shapes), *in_shapes[0][1:])
    if node.op in TABLE_OPS:
        if node.op == "leaky_relu" and not (isinstance(a.get("alpha"), (int, float)) and 0 <= a["alpha"] < 1):
            raise _fail(node, f"leaky ReLU slope {a.get('alpha')!r} must be a number in [0, 1)")
        return in_shapes[0]
    if node.op == "softmax":
        (s,) = in_shapes
        if len(s) != 1:
            raise _fail(node, f"softmax over a vector only (the classes), got shape {s}")
        return s
    if node.op == "flatten":
        return (math.prod(in_shapes[0]),)
    if node.op in ("copy", "reduce_max", "mean_reduce"):  # byte moves (moves.py): any rank, described by the importer
        shape = _target_shape(node)
        n_in, n_out = [math.prod(s) for s in in_shapes], math.prod(shape)
        try:
            if node.op == "copy":
                if type(a.get("fill", False)) is not bool:
                    raise moves.MoveError(f"attribute fill = {str(a.get('fill'))[:20]} is not true or false")
                moves.check_moves(a.get("moves"), n_in, n_out, fill=a.get("fill", False))
            elif len(in_shapes) != 1:
                raise moves.MoveError("one input")
            else:
                moves.reduce_positions(a.get("reduce"), n_in[0], n_out)
        except moves.MoveError as e:
            raise _fail(node, f"{e}") from None
        return shape
    if node.op == "reshape":
        shape = _target_shape(node)
        if math.prod(shape) != math.prod(in_shapes[0]):
            raise _fail(node, f"cannot reshape {in_shapes[0]} ({math.prod(in_shapes[0])} values) to {list(shape)}")
        return tuple(shape)
    raise _fail(node, "no shape rule")  # pragma: no cover


def _target_shape(node: Node) -> tuple[int, ...]:
    """The ``shape`` attribute of a reshape / copy / reduce_max (untrusted in a .nq)."""
    shape = node.attrs.get("shape")
    if not (isinstance(shape, (list, tuple)) and len(shape) in (1, 3)
            and all(isinstance(v, int) and not isinstance(v, bool) and 0 < v <= 1 << 24 for v in shape)):
        raise _fail(node, f"target shape {str(shape)[:60]} is not a C×H×W or vector shape of positive integers")
    return tuple(shape)


def infer_shapes(graph: Graph) -> dict[str, tuple[int, ...]]:
    """Recompute every tensor's shape, checking each node; stores and returns graph.shapes."""
    shapes = {graph.input_name: tuple(graph.input_shape)}
    for node in graph.nodes:
        for t in node.inputs:
            if t not in shapes:
                raise _fail(node, f"input tensor '{t}' is not produced before this node")
        if node.output in shapes:
            raise _fail(node, f"tensor '{node.output}' is produced twice")
        if node.op in WEIGHT_OPS and (node.weight is None or node.bias is None):
            raise _fail(node, "missing weight or bias")
        shapes[node.output] = infer_node_shape(node, [shapes[t] for t in node.inputs])
    if graph.output_name not in shapes or graph.output_name == graph.input_name:
        raise NupesError(f"graph output '{graph.output_name}' is never produced by a node")
    graph.shapes = shapes
    return shapes


def macs(graph: Graph) -> int:
    """Multiply-accumulates of one inference (conv, linear, an LSTM's gates at every step, an SVDF's
    feature weights and, from the reset state, each filter's newest time weight)."""
    total = 0
    for n in graph.weight_nodes():
        out = graph.shapes[n.output]
        per_out = math.prod(n.weight.shape[1:])
        total += math.prod(out) * per_out
    for n in graph.nodes:
        if n.op == "lstm":  # (4, S, F + S) weights, each step
            total += graph.shapes[n.output][2] * math.prod(n.weight.shape)
        if n.op == "svdf":  # (F, I) feature weights and one time weight per filter
            total += n.weight.shape[0] * (graph.shapes[n.inputs[0]][0] + 1)
    return total


def with_device_softmax(graph: Graph) -> Graph:
    """``graph`` with its final Softmax as a node of its own (run on the device, int8 probabilities
    with scale 1/256 and zero point -128, TFLite's arithmetic) instead of left to the caller."""
    if not graph.output_softmax:
        return graph
    node = Node(name=f"softmax_{len(graph.nodes)}", op="softmax", inputs=[graph.output_name],
                output=f"{graph.output_name}_probs", attrs={"beta": float(graph.softmax_beta)},
                source="the model's final Softmax")
    g = Graph(input_name=graph.input_name, input_shape=graph.input_shape, output_name=node.output,
              nodes=[*graph.nodes, node], output_softmax=False, input_layout=graph.input_layout,
              file_quant=graph.file_quant, softmax_beta=graph.softmax_beta, source_tflite=graph.source_tflite)
    infer_shapes(g)
    return g
