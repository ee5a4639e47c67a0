"""From a QuantModel to a C schedule: layouts, weight rows in kernel order, the arena plan.

Decisions (docs/codegen.md): activations are HWC in C; conv weight rows are (kh, kw, c_in),
depthwise rows (kh, kw), dense rows in the HWC order of their input (a Flatten of an H×W>1
tensor is folded into the next Linear by permuting its columns, so Flatten costs nothing).
The arena holds every intermediate tensor; offsets come from greedy first-fit by size over
tensor lifetimes (TFLite Micro's idea), so tensors that are never alive together share bytes.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import NupesError
from ..intparams import IntAdd, IntClamp, IntLayer
from ..intref.fixedpoint import INT32_MAX
from ..ir import macs
from ..layout import weights_hwc
from ..packing import pack_rows
from ..qmodel import QuantModel
from .cvalues import c_identifier, c_int, c_ints

ALIGN = 4
_ALLOWED_ATTRS = {
    "conv2d": {"stride", "pads", "groups", "act"}, "linear": {"act"}, "add": {"act"},
    "maxpool2d": {"kernel", "stride", "pads"}, "avgpool2d": {"kernel", "stride", "pads"},
    "global_avgpool": set(), "relu": set(), "relu6": set(), "flatten": set(),
}


@dataclass
class LayerData:
    """One weight layer's flash arrays, in C order."""

    cname: str
    node_name: str
    packed: np.ndarray  # uint8, rows + one guard byte
    row_bytes: int
    bits: int
    lut: np.ndarray
    bias: np.ndarray
    mult: np.ndarray
    shift: np.ndarray
    p: IntLayer


@dataclass
class Step:
    index: int
    node_name: str
    op: str  # C kernel name
    call: str  # the C statement
    in_tensors: list[str]
    out_tensor: str


@dataclass
class Plan:
    name: str
    input_shape: tuple
    output_shape: tuple
    input_size: int
    output_size: int
    layers: list[LayerData]
    adds: dict[str, IntAdd]
    steps: list[Step]
    offsets: dict[str, int]  # arena tensors → byte offset
    sizes: dict[str, int]
    arena_bytes: int
    arena_naive_bytes: int
    scratch_entries: int
    output_in_arena: bool
    report: dict = field(default_factory=dict)


def _refuse(node, msg: str) -> NupesError:
    return NupesError(f"codegen: layer '{node.name}' [{node.op}]: {msg}; the C runtime does not implement it")


def _validate(qm: QuantModel) -> None:
    g = qm.graph
    for node in g.nodes:
        extra = set(node.attrs) - _ALLOWED_ATTRS.get(node.op, set())
        if node.op not in _ALLOWED_ATTRS:
            raise _refuse(node, "unknown op")
        if extra:
            raise _refuse(node, f"attribute(s) {sorted(extra)} (e.g. dilation)")
        if node.op == "conv2d" and node.attrs["groups"] not in (1, g.shapes[node.inputs[0]][0]):
            raise _refuse(node, f"groups={node.attrs['groups']}")
        if node.op == "avgpool2d" and any(node.attrs["pads"]):
            raise _refuse(node, "average pooling with padding")
        if node.op in ("maxpool2d", "avgpool2d", "conv2d"):
            kh, kw = node.weight.shape[2:] if node.op == "conv2d" else node.attrs["kernel"]
            pt, pl, pb, pr = node.attrs["pads"]
            if max(pt, pb) >= kh or max(pl, pr) >= kw:
                raise _refuse(node, f"padding {node.attrs['pads']} as large as the kernel")
        p = qm.params.get(node.name)
        if node.op in ("conv2d", "linear"):
            _check_layer(node, p)
        elif node.op == "add":
            _check_add(node, p)
        if isinstance(p, IntLayer):
            left = np.maximum(p.shift.astype(np.int64), 0)
            if np.any(p.acc_bound.astype(np.int64) << left > INT32_MAX):
                raise _refuse(node, "a requantization multiplier > 1 whose pre-shift could overflow int32")
        if node.op == "flatten":
            c, *hw = g.shapes[node.inputs[0]]
            if int(np.prod(hw or [1])) > 1 and any(n.op != "linear" for n in g.consumers(node.output)) \
                    or (int(np.prod(hw or [1])) > 1 and node.output == g.output_name):
                raise _refuse(node, "Flatten of an H×W > 1 tensor that does not feed a Linear")


def _hwc_size(shape) -> int:
    return int(np.prod(shape))


INT32 = (-(1 << 31), (1 << 31) - 1)
DIM = (0, 1 << 20)  # any tensor dimension, kernel size, stride or padding the generator writes


def _geom(node, values) -> str:
    """A nupes_conv_geom_t initializer; every field a checked integer."""
    return "{" + ", ".join(str(c_int(v, *DIM, f"layer '{node.name}': geometry")) for v in values) + "}"


C1_MAX_TAPS = 32  # NUPES_C1_MAX_TAPS in runtime_c/nupes_kernels.h
C1_MAX_SCRATCH = 2048  # int16 entries the single-input-channel kernel may ask for


def conv_kernel(depthwise: bool, c_in: int, c_out: int, kh: int, kw: int) -> tuple[str, int]:
    """Which C kernel a convolution gets, and the int16 scratch entries it needs (decided here,
    once, from the shapes; the generated schedule calls it directly)."""
    if depthwise:
        # depthwise scratch: every channel's levels and an int32 folded bias each (DSP path, multiplier 1)
        return "nupes_depthwise_conv2d", (kh * kw + 2) * c_out
    taps2 = (kh * kw + 1) // 2 * 2
    if c_in == 1 and kh * kw <= C1_MAX_TAPS and c_out * taps2 <= C1_MAX_SCRATCH:
        # one input channel: a kernel row is only kw long, so the window is built once per position
        return "nupes_conv2d_c1", c_out * taps2
    return "nupes_conv2d", 2 * kh * kw * c_in  # two output channels decoded at a time


def signed_lut(lut: np.ndarray, bits: int) -> np.ndarray:
    """The C table: 2^bits int16 levels indexed by the whole sign-magnitude field f, so a kernel
    decodes a code with one load: t[f] = (f has the sign bit ? -1 : 1) * lut[f & (Qmax)]."""
    fields = np.arange(1 << bits)
    mag = np.asarray(lut, np.int32)[fields & ((1 << (bits - 1)) - 1)]
    return np.where(fields >> (bits - 1), -mag, mag).astype(np.int16)


def _params_of(node, p, cls):
    if not isinstance(p, cls):
        raise NupesError(f"layer '{node.name}' [{node.op}]: integer parameters missing or of the wrong kind "
                         f"({type(p).__name__}, expected {cls.__name__})")
    return p


def _clamp_bounds(node, p) -> tuple[int, int]:
    p = _params_of(node, p, IntClamp)
    lo, hi = (c_int(v, -128, 127, f"layer '{node.name}': clamp bound") for v in (p.lo, p.hi))
    if lo > hi:
        raise NupesError(f"layer '{node.name}': clamp bounds [{lo}, {hi}] are empty")
    return lo, hi


def _check_layer(node, p: IntLayer) -> None:
    """The integer parameters of a weight layer, in the types and ranges the C declares."""
    what = f"layer '{node.name}'"
    _params_of(node, p, IntLayer)
    bits = c_int(p.bits, 2, 8, f"{what}: bits")
    c_ints(p.lut, 0, (1 << 15) - 1, f"{what}: lut")
    if np.asarray(p.lut).shape != (1 << (bits - 1),):
        raise NupesError(f"{what}: lut has {np.asarray(p.lut).size} entries, {bits}-bit codes need {1 << (bits - 1)}")
    c_ints(p.packed, 0, 255, f"{what}: packed codes")
    w_shape = tuple(node.weight.shape)
    k = int(np.prod(w_shape[1:]))
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
    if not (isinstance(p.a, (int, float, np.floating)) and 0 < float(p.a) < 100):
        raise NupesError(f"{what}: exponent a = {str(p.a)[:40]!r} is not a number in (0, 100)")


def _check_add(node, p: IntAdd) -> None:
    what = f"layer '{node.name}'"
    _params_of(node, p, IntAdd)
    for f in ("in1_zp", "in2_zp", "out_zp", "act_min", "act_max"):
        c_int(getattr(p, f), -128, 127, f"{what}: {f}")
    for f in ("in1_mult", "in2_mult", "out_mult"):
        c_int(getattr(p, f), 0, INT32[1], f"{what}: {f}")
    for f in ("in1_shift", "in2_shift", "out_shift"):
        c_int(getattr(p, f), -31, 30, f"{what}: {f}")
    c_int(p.left_shift, 0, 30, f"{what}: left_shift")


def plan(qm: QuantModel, name: str | None = None) -> Plan:
    _validate(qm)
    g = qm.graph
    cname = c_identifier(name or qm.name)
    alias: dict[str, str] = {}  # tensor → the tensor whose bytes it is
    flatten_src: dict[str, tuple] = {}  # flatten output → shape of its input
    for node in g.nodes:
        if node.op == "flatten":
            alias[node.output] = alias.get(node.inputs[0], node.inputs[0])
            flatten_src[node.output] = g.shapes[node.inputs[0]]

    def storage(t: str) -> str:
        return alias.get(t, t)

    out_store = storage(g.output_name)
    output_in_arena = out_store == g.input_name or out_store != g.output_name
    # --- lifetimes of arena tensors
    real = [n for n in g.nodes if n.op != "flatten"]
    first: dict[str, int] = {}
    last: dict[str, int] = {}
    for i, node in enumerate(real):
        t = storage(node.output)
        first.setdefault(t, i)
        last[t] = max(last.get(t, i), i)
        for src in node.inputs:
            s = storage(src)
            last[s] = max(last.get(s, i), i)
    arena_tensors = [t for t in first if t != g.input_name and not (t == out_store and not output_in_arena)]
    if output_in_arena and out_store in first:
        last[out_store] = len(real)  # copied out after the last step
    sizes = {t: _hwc_size(g.shapes[t]) for t in arena_tensors}
    offsets: dict[str, int] = {}
    placed: list[tuple[int, int, str]] = []
    for t in sorted(arena_tensors, key=lambda t: (-sizes[t], first[t])):
        live = sorted((o, o + sizes[u]) for o, _, u in placed if not (last[u] < first[t] or last[t] < first[u]))
        off = 0
        for lo, hi in live:
            if off + sizes[t] <= lo:
                break
            off = max(off, (hi + ALIGN - 1) // ALIGN * ALIGN)
        offsets[t] = off
        placed.append((off, off + sizes[t], t))
    arena_bytes = max((o + sizes[t] for t, o in offsets.items()), default=0)
    arena_bytes = (arena_bytes + ALIGN - 1) // ALIGN * ALIGN
    arena_naive = sum((s + ALIGN - 1) // ALIGN * ALIGN for s in sizes.values())

    def ptr(t: str) -> str:
        s = storage(t)
        if s == g.input_name:
            return "in"
        if s == out_store and not output_in_arena:
            return "out"
        return f"(arena.b + {offsets[s]})"

    layers: list[LayerData] = []
    adds: dict[str, IntAdd] = {}
    steps: list[Step] = []
    scratch = 0
    for i, node in enumerate(real):
        p = qm.params.get(node.name)
        ins = [ptr(t) for t in node.inputs]
        out = ptr(node.output)
        if node.op in ("conv2d", "linear"):
            rows = weights_hwc(p.codes, node.op, flatten_src.get(node.inputs[0]))
            packed = pack_rows(rows, p.bits)
            data = np.concatenate([packed.ravel(), np.zeros(1, np.uint8)])  # guard byte for the 2-byte window
            lname = f"{cname}_layer{i}"  # derived: never a name from the file
            layers.append(LayerData(lname, node.name, data, packed.shape[1], p.bits, signed_lut(p.lut, p.bits), p.bias,
                                    p.mult, p.shift, p))
        if node.op == "conv2d":
            c_in, h, w = g.shapes[node.inputs[0]]
            c_out, oh, ow = g.shapes[node.output]
            _, _, kh, kw = node.weight.shape
            geom = _geom(node, (h, w, c_in, oh, ow, c_out, kh, kw, *node.attrs["stride"][:2], *node.attrs["pads"][:2]))
            kernel, entries = conv_kernel(node.attrs["groups"] != 1, c_in, c_out, kh, kw)
            scratch = max(scratch, entries)
            call = f"{{ static const nupes_conv_geom_t g = {geom}; {kernel}({ins[0]}, {out}, &g, &{lname}, scratch.h); }}"
        elif node.op == "linear":
            k = node.weight.shape[1]
            scratch = max(scratch, k)
            kernel = "nupes_fully_connected"
            call = f"{kernel}({ins[0]}, {out}, {k}, {node.weight.shape[0]}, &{lname}, scratch.h);"
        elif node.op == "add":
            adds[f"{cname}_layer{i}"] = p
            kernel = "nupes_add"
            call = f"{kernel}({ins[0]}, {ins[1]}, {out}, {_hwc_size(g.shapes[node.output])}, &{cname}_layer{i});"
        elif node.op in ("maxpool2d", "avgpool2d"):
            lo, hi = _clamp_bounds(node, p)
            c, h, w = g.shapes[node.inputs[0]]
            _, oh, ow = g.shapes[node.output]
            kh, kw = node.attrs["kernel"]
            geom = _geom(node, (h, w, c, oh, ow, c, kh, kw, *node.attrs["stride"][:2], *node.attrs["pads"][:2]))
            kernel = "nupes_max_pool2d" if node.op == "maxpool2d" else "nupes_avg_pool2d"
            call = f"{{ static const nupes_conv_geom_t g = {geom}; {kernel}({ins[0]}, {out}, &g, {lo}, {hi}); }}"
        elif node.op == "global_avgpool":
            lo, hi = _clamp_bounds(node, p)
            c, h, w = g.shapes[node.inputs[0]]
            kernel = "nupes_global_avg_pool"
            call = f"{kernel}({ins[0]}, {out}, {h * w}, {c}, {lo}, {hi});"
        elif node.op in ("relu", "relu6"):
            lo, hi = _clamp_bounds(node, p)
            kernel = "nupes_clamp"
            call = f"{kernel}({ins[0]}, {out}, {_hwc_size(g.shapes[node.output])}, {lo}, {hi});"
        else:  # pragma: no cover - _validate rejects the rest
            raise _refuse(node, "no kernel")
        steps.append(Step(i, node.name, kernel, call, list(node.inputs), node.output))

    params = sum(int(np.prod(n.weight.shape)) for n in g.weight_nodes())
    packed_bound = sum((int(np.prod(n.weight.shape)) * qm.params[n.name].bits + 7) // 8 for n in g.weight_nodes())
    report = {
        "params": params,
        "macs": macs(g),
        "flash_weights_bytes": int(sum(L.packed.size for L in layers)),
        "flash_weights_bound_bytes": int(packed_bound + sum(L.p.bias.size + 1 for L in layers)),
        "flash_tables_bytes": int(sum(L.lut.size * 2 for L in layers)),
        "flash_meta_bytes": int(sum(L.bias.size * 12 for L in layers)),
        "arena_bytes": int(arena_bytes),
        "arena_naive_bytes": int(arena_naive),
        "scratch_bytes": int(scratch * 2),
        "input_bytes": _hwc_size(g.input_shape),
        "output_bytes": _hwc_size(g.output_shape),
    }
    return Plan(name=cname, input_shape=tuple(g.input_shape), output_shape=tuple(g.output_shape),
                input_size=_hwc_size(g.input_shape), output_size=_hwc_size(g.output_shape), layers=layers, adds=adds,
                steps=steps, offsets=offsets, sizes=sizes, arena_bytes=arena_bytes, arena_naive_bytes=arena_naive,
                scratch_entries=max(scratch, 1), output_in_arena=output_in_arena, report=report)
