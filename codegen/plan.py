"""From a QuantModel to a C schedule: layouts, weight rows in kernel order, the arena plan.

Decisions (docs/codegen.md): activations are HWC in C; conv weight rows are (kh, kw, c_in),
depthwise rows (kh, kw), dense rows in the HWC order of their input (a Flatten of an H×W>1
tensor is folded into the next Linear by permuting its columns, so Flatten costs nothing).
The arena holds every intermediate tensor; offsets come from greedy first-fit by size over
tensor lifetimes (TFLite Micro's idea), so tensors that are never alive together share bytes.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from .. import moves
from ..state import carries
from ..errors import NupesError
from ..intparams import IntAdd, IntLayer
from ..intref.fixedpoint import INT32_MAX
from ..ir import ALIAS_OPS, TABLE_OPS, macs
from ..layout import weights_hwc
from ..packing import pack_rows
from ..qmodel import QuantModel
from ..validate import (INT32, check_add, check_concat, check_layer, check_lstm, check_mean, check_mul,
                        check_softmax, check_svdf, check_table, clamp_bounds)
from .cvalues import c_identifier, c_int, c_ints

ALIGN = 4
_ALLOWED_ATTRS = {
    "conv2d": {"stride", "pads", "groups", "act"}, "linear": {"act"}, "add": {"act"}, "mul": {"act"},
    "maxpool2d": {"kernel", "stride", "pads"}, "avgpool2d": {"kernel", "stride", "pads"},
    "global_avgpool": set(), "mean": set(), "reshape": {"shape"}, "relu": set(), "relu6": set(), "flatten": set(), "softmax": {"beta"},
    "sigmoid": set(), "tanh": set(), "hardswish": set(), "leaky_relu": {"alpha"}, "requantize": set(), "concat": set(),
    "copy": {"shape", "moves", "fill"}, "reduce_max": {"shape", "reduce"}, "mean_reduce": {"shape", "reduce"}, "clamp": {"lo", "hi"}, "maximum": set(),
    "minimum": set(), "lstm": {"cell_clip", "cell_act"},
    "svdf": {"rank", "act"},
}


@dataclass
class LayerData:
    """One weight layer's flash arrays, in C order."""

    cname: str
    node_name: str
    packed: np.ndarray  # uint8, rows + one guard byte
    row_bytes: int
    bits: int
    lut: np.ndarray | None  # the signed table, None where it is omitted (identity / unused)
    bias: np.ndarray
    mult: np.ndarray
    shift: np.ndarray
    p: IntLayer
    pairs: np.ndarray | None = None  # uint32 (lo, hi) level pairs for nupes_fully_connected_p4/_p2
    lshift: int = 0  # G of a layer whose levels are q << G (nupes_fully_connected_s8)


@dataclass
class Step:
    index: int
    node_name: str
    op: str  # C kernel name
    call: str  # the C statement
    in_tensors: list[str]
    out_tensor: str
    profiled: bool = True  # False: a tiled chain's layer, whose kernel calls profile themselves


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
    table_free_adds: set = field(default_factory=set)  # adds (C names) that compute their rescaling
    storage: dict = field(default_factory=dict)  # tensor → the tensor whose bytes it is (a Flatten's input's)
    lifetimes: dict = field(default_factory=dict)  # arena tensor → (first step writing it, last step reading it)
    inplace: dict = field(default_factory=dict)  # convolutions written over their input → rows held aside
    tiled: dict = field(default_factory=dict)  # a tiled chain's first layer → (its layers, rows per band, tile bytes)
    lstms: dict = field(default_factory=dict)  # C name → an LSTM's flash data (lstm_data)
    svdfs: dict = field(default_factory=dict)  # C name → an SVDF's flash data (svdf_data)
    # a "carry" model's static state buffers (nupes_edge/state.py): {cname, type, len, reset (the value
    # nupes_<name>_reset writes), bytes}; empty for a reset model
    states: list = field(default_factory=list)


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
            check_layer(node, p)
        elif node.op == "add":
            check_add(node, p)
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


DIM = (0, 1 << 20)  # any tensor dimension, kernel size, stride or padding the generator writes


def _geom(node, values) -> str:
    """A nupes_conv_geom_t initializer; every field a checked integer."""
    return "{" + ", ".join(str(c_int(v, *DIM, f"layer '{node.name}': geometry")) for v in values) + "}"


CONV_MAX_TAPS = 64  # NUPES_CONV_MAX_TAPS in runtime_c/nupes_conv2d.c
WINDOW_MAX = 64  # NUPES_WINDOW_MAX in runtime_c/nupes_kernels.h: k_h * k_w * c_in of nupes_conv2d_window
WINDOW_CHUNK = 32  # NUPES_WINDOW_CHUNK: output channels it decodes at a time
WINDOW_MAX_CIN = 4  # beyond this the general kernel's runs are long enough
RQ_ENTRIES = 10  # sizeof(nupes_rq_t) in int16 entries (five int32)


def im2col_shape(c_in: int, kh: int, kw: int, stride=(1, 1), pads=(0, 0, 0, 0)) -> bool:
    """A (non-depthwise) convolution nupes_conv2d_im2col can take when its weights suit it
    (``im2col_weights``): whole DSP groups per tap and not a few-channel input
    (nupes_conv2d_window's). Pointwise convolutions too: two pixels widened once for every
    channel beat nupes_conv2d_1x1's per-channel-pair widening (KWS 64->64: 2.25 -> ~1.3 instr/MAC)."""
    return c_in % 4 == 0 and not (c_in <= WINDOW_MAX_CIN and kh * kw * c_in <= WINDOW_MAX)


def im2col_weights(bits: int, identity8: bool) -> bool:
    """Weights nupes_conv2d_im2col reads without decoding into scratch: int8 identity levels
    (uniform 8-bit, G = 0), or 2- / 4-bit codes through a table of level pairs."""
    return identity8 if bits == 8 else bits in (2, 4)


def conv_kernel(depthwise: bool, c_in: int, c_out: int, kh: int, kw: int, stride=(1, 1), pads=(0, 0, 0, 0),
                im2col: int = 0) -> tuple[str, int]:
    """Which C kernel a convolution gets, and the int16 scratch entries it needs (decided here,
    once, from the shapes; the generated schedule calls it directly). ``im2col``: the weight bits
    when the weights suit nupes_conv2d_im2col (``im2col_weights``), else 0."""
    if depthwise:
        return "nupes_depthwise_conv2d", kh * kw  # depthwise scratch: one decoded channel
    taps2 = (kh * kw * c_in + 1) // 2 * 2
    if im2col and im2col_shape(c_in, kh, kw, stride, pads):
        # two output positions' windows (int16, in_zp for padding) built once for every channel;
        # one entry point per weight format, so a model links only the inner loop it uses
        return f"nupes_conv2d_im2col_{ {8: 's8', 4: 'p4', 2: 'p2'}[im2col] }", 2 * kh * kw * c_in
    if kh == kw == 1 and tuple(stride) == (1, 1) and not any(pads) and c_in % 4 == 0:
        return "nupes_conv2d_1x1", 2 * c_in  # a matrix product over pixels: no window, no border
    if c_in <= WINDOW_MAX_CIN and kh * kw * c_in <= WINDOW_MAX:
        # few input channels: a kernel row is only kw * c_in long, so each position's window is built
        # once for all output channels instead
        chunk = min(c_out, WINDOW_CHUNK)  # per channel pair (an odd last one doubled): biases, levels, requantizations
        return "nupes_conv2d_window", (chunk + 1) // 2 * 2 * (taps2 + RQ_ENTRIES)
    # two output channels decoded at a time; the fast kernel needs whole DSP groups per tap
    kernel = "nupes_conv2d" if c_in % 4 == 0 and kh * kw <= CONV_MAX_TAPS else "nupes_conv2d_ref"
    return kernel, 2 * kh * kw * c_in


def _shift_lut(p: IntLayer) -> bool:
    """Levels are the codes shifted: L[q] = q << G (uniform a = 1 at 8 bits, every 2-bit table)."""
    q = np.arange(len(p.lut), dtype=np.int64)
    return bool(np.array_equal(np.asarray(p.lut, np.int64), q << int(p.G)))


def _conv_uses_im2col(node, p: IntLayer) -> tuple[bool, bool]:
    """(im2col kernel, identity 8-bit levels) for a convolution: the choice the schedule makes."""
    identity8 = p.bits == 8 and _shift_lut(p) and int(p.G) == 0  # int8 levels, no table
    use_im2col = node.op == "conv2d" and node.attrs["groups"] == 1 and im2col_weights(p.bits, identity8) \
        and im2col_shape(int(node.weight.shape[1]), int(node.weight.shape[2]), int(node.weight.shape[3]),
                         node.attrs["stride"][:2], node.attrs["pads"])
    return use_im2col, identity8


def step_scratch(qm: QuantModel, node, flatten_src: dict) -> int:
    """int16 scratch entries a step's kernel needs (0 for kernels without scratch)."""
    g, p = qm.graph, qm.params.get(node.name)
    if node.op == "conv2d":
        use_im2col, _ = _conv_uses_im2col(node, p)
        c_in, c_out = g.shapes[node.inputs[0]][0], g.shapes[node.output][0]
        _, _, kh, kw = node.weight.shape
        return conv_kernel(node.attrs["groups"] != 1, c_in, c_out, kh, kw, node.attrs["stride"][:2],
                           node.attrs["pads"], im2col=p.bits if use_im2col else 0)[1]
    if node.op == "linear":
        kernel, _ = fc_kernel(p, weights_hwc(p.codes, node.op, flatten_src.get(node.inputs[0])))
        return node.weight.shape[1] if kernel == "nupes_fully_connected" else 0
    if node.op == "lstm":  # the cell state and the four gates' rows, int16
        return 5 * g.shapes[node.output][0]
    return 0


def lstm_data(node, p, in_shape, out_shape) -> dict:
    """nupes_lstm_s8's flash data (model_data.c): the weights, the biases with the zero points folded
    (bias - in_zp * sum w_in, -hid_zp * sum w_rec: the kernel sums w * x), and the scalar fields of its
    nupes_lstm_t after the four arrays, every value checked."""
    check_lstm(node, p, in_shape, out_shape)
    f, _, steps = in_shape
    units = out_shape[0]
    w_in, w_rec = np.asarray(p.w_in, np.int64), np.asarray(p.w_rec, np.int64)
    in_bias = c_ints(np.asarray(p.bias, np.int64) - int(p.in_zp) * w_in.sum(axis=2), *INT32, f"layer '{node.name}': bias")
    rec_bias = c_ints(-int(p.hid_zp) * w_rec.sum(axis=2), *INT32, f"layer '{node.name}': recurrent bias")
    # the kernel sums w * x onto the folded bias: every partial sum within 128 * sum|w| + |folded bias|
    for w, folded in ((w_in, in_bias), (w_rec, rec_bias)):
        if (128 * np.abs(w).sum(axis=2) + np.abs(folded)).max(initial=0) > INT32_MAX:
            raise _refuse(node, "a gate's sum with the zero point folded could overflow int32")
    ints = ", ".join
    init = (f"{{ {ints(str(int(v)) for v in np.asarray(p.fc_mult).ravel())} }}, "
            f"{{ {ints(str(int(v)) for v in np.asarray(p.fc_shift).ravel())} }}, {int(p.hid_zp)}, {int(p.cell_mult)}, "
            f"{int(p.cell_shift)}, {int(p.gate_mult)}, {int(p.gate_shift)}, {int(p.hid_mult)}, {int(p.hid_shift)}, "
            f"{int(p.tanh_mult)}, {int(p.tanh_shift)}, {int(p.cell_clip)}, {int(p.cell_act == 'tanh')}, "
            f"{c_int(steps, 1, 1 << 20, 'steps')}, {c_int(f, 1, 1 << 20, 'features')}, {c_int(units, 1, 1 << 16, 'units')}")
    return {"w_in": w_in, "w_rec": w_rec, "in_bias": in_bias, "rec_bias": rec_bias, "init": init,
            "bytes": int(w_in.size + w_rec.size + 4 * (in_bias.size + rec_bias.size))}


def svdf_data(node, p, in_shape, out_shape, carry: bool = False) -> dict:
    """nupes_svdf_s8's flash data (model_data.c): the feature weights, their sums times -in_zp per filter
    (the kernel sums w * x), each filter's newest time weight (the only one that meets a state value off
    its zero point in an inference from the reset state), the bias, and the scalar fields of its
    nupes_svdf_t after the four arrays, every value checked. ``carry`` (nupes_svdf_s8_carry): every
    filter's time weights, filters x memory."""
    check_svdf(node, p, in_shape, out_shape, carry)
    wf = np.asarray(p.w_feature, np.int64)
    folded = c_ints(-int(p.in_zp) * wf.sum(axis=1), *INT32, f"layer '{node.name}': feature bias")
    if (128 * np.abs(wf).sum(axis=1) + np.abs(folded)).max(initial=0) > INT32_MAX:
        raise _refuse(node, "a filter's feature sum with the zero point folded could overflow int32")
    w_time = np.asarray(p.w_time, np.int64) if carry else np.asarray(p.w_time, np.int64)[:, -1]
    bias = np.asarray(p.bias, np.int64)
    bits = int(p.state_bits)
    init = (f"{int(p.mult1)}, {int(p.shift1)}, {int(p.mult2)}, {int(p.shift2)}, {-(1 << (bits - 1))}, "
            f"{(1 << (bits - 1)) - 1}, {int(p.state_zp)}, {int(p.out_zp)}, {c_int(in_shape[0], 1, 1 << 20, 'inputs')}, "
            f"{c_int(out_shape[0], 1, 1 << 16, 'units')}, {c_int(p.rank, 1, 1 << 16, 'rank')}")
    return {"w_feature": wf, "feature_bias": folded, "w_time": w_time, "bias": bias, "init": init,
            "bytes": int(wf.size + 4 * folded.size + 2 * w_time.size + 4 * bias.size)}


def _folded_bias(p: IntLayer, levels: np.ndarray) -> np.ndarray:
    """bias - in_zp * sum(levels) per row: the DSP dense kernels sum w * x and add this, exactly
    sum w * (x - zp) + bias. |bias| + 128 * sum|w| <= acc_bound < 2^31 (max|x - zp| >= 128)."""
    b = np.asarray(p.bias, np.int64) - int(p.in_zp) * levels.astype(np.int64).sum(axis=1)
    return c_ints(b, *INT32, "folded bias").astype(np.int32)


def im2col_data(p: IntLayer, rows: np.ndarray) -> dict:
    """The flash arrays of a nupes_conv2d_im2col layer (rows: (out, k) codes in (kh, kw, c_in) order,
    k % 4 == 0). 8-bit identity levels: int8 rows. 2 / 4 bits: each group of four codes stored
    (c0, c2, c1, c3), so one 2b-bit field is a pair of levels in SXTB16's lane order, looked up in
    a table of 2^(2b) packed pairs that the kernel makes on the stack from the usual LUT (in flash,
    the layer costs exactly what a packed layer costs). The bias is folded: bias - in_zp *
    sum(levels), as the kernel reads in_zp for padding."""
    levels = np.sign(rows) * np.asarray(p.lut, np.int64)[np.abs(rows.astype(np.int64))]
    bias = _folded_bias(p, levels)
    if p.bits == 8:
        return {"packed": np.concatenate([rows.astype(np.int8).view(np.uint8).ravel(), np.zeros(1, np.uint8)]),
                "row_bytes": rows.shape[1], "bias": bias, "lut": None}
    perm = rows.reshape(rows.shape[0], -1, 4)[:, :, [0, 2, 1, 3]].reshape(rows.shape)
    packed = pack_rows(perm, p.bits)
    return {"packed": np.concatenate([packed.ravel(), np.zeros(1, np.uint8)]), "row_bytes": packed.shape[1],
            "bias": bias}


def fc_kernel(p: IntLayer, rows: np.ndarray) -> tuple[str, dict]:
    """Which dense kernel a layer gets and the flash arrays it reads (decided here, from the bits
    and the table). rows: (out, k) int8 codes in the device's column order."""
    levels = np.sign(rows) * np.asarray(p.lut, np.int64)[np.abs(rows.astype(np.int64))]
    if p.bits == 8 and _shift_lut(p):
        # int8 two's-complement codes (the same bytes as 8-bit packed codes), unpacked by SXTB16 like inputs
        data = np.concatenate([rows.astype(np.int8).view(np.uint8).ravel(), np.zeros(1, np.uint8)])
        return "nupes_fully_connected_s8", {"packed": data, "row_bytes": rows.shape[1], "lshift": int(p.G),
                                            "bias": _folded_bias(p, levels), "lut": None}
    if p.bits in (2, 4):
        # codes of each group of four stored as (c0, c2, c1, c3): one 2b-bit field is a pair of levels in
        # SXTB16's lane order, looked up in a table of 2^(2b) packed pairs (4-bit: 1 KB, 2-bit: 64 B)
        k4 = -(-rows.shape[1] // 4) * 4
        padded = np.zeros((rows.shape[0], k4), rows.dtype)
        padded[:, :rows.shape[1]] = rows
        perm = padded.reshape(rows.shape[0], -1, 4)[:, :, [0, 2, 1, 3]].reshape(rows.shape[0], k4)
        packed = pack_rows(perm, p.bits)
        slut = signed_lut(p.lut, p.bits).astype(np.int64) & 0xFFFF
        idx = np.arange(1 << (2 * p.bits))
        pairs = (slut[idx & ((1 << p.bits) - 1)] | (slut[idx >> p.bits] << 16)).astype(np.uint32)
        kernel = {4: "nupes_fully_connected_p4", 2: "nupes_fully_connected_p2"}[p.bits]  # a fixed name, not a number
        return kernel, {"packed": np.concatenate([packed.ravel(), np.zeros(1, np.uint8)]),
                        "row_bytes": packed.shape[1], "pairs": pairs, "bias": _folded_bias(p, levels)}
    packed = pack_rows(rows, p.bits)
    return "nupes_fully_connected", {"packed": np.concatenate([packed.ravel(), np.zeros(1, np.uint8)]),
                                     "row_bytes": packed.shape[1], "bias": np.asarray(p.bias)}


def layer_flash_bytes(op: str, weight_shape: tuple, bits: int, table_free: bool = False) -> int:
    """The flash bytes ``plan`` gives one weight layer at ``bits``: packed rows and their guard byte,
    its tables, and 12 bytes of bias + requantization per output channel (the quantities
    ``flash_weights_bytes + flash_tables_bytes + flash_meta_bytes`` add up). It depends on the shape
    and the bits only, except ``table_free``: an 8-bit layer whose levels turn out to be the codes
    shifted (uniform a = 1; for a convolution also G = 0) stores no table. Left False, the figure
    is an upper bound, which is what a flash budget needs before the layer is quantized."""
    rows = int(weight_shape[0])
    k = int(np.prod(weight_shape[1:]))
    meta = rows * 12
    if bits == 8 and table_free:
        return rows * k + 1 + meta
    table = (1 << bits) * 2
    if op == "linear" and bits in (2, 4):  # nupes_fully_connected_p4/_p2: rows padded to groups of 4
        k4 = -(-k // 4) * 4
        return rows * ((k4 * bits + 7) // 8) + 1 + (1 << (2 * bits)) * 4 + table + meta
    return rows * ((k * bits + 7) // 8) + 1 + table + meta


ADD_TABLE_BYTES = 2 * 256 * 4  # each add's two int32 rescaling tables


def signed_lut(lut: np.ndarray, bits: int) -> np.ndarray:
    """The C table: 2^bits int16 levels indexed by the whole sign-magnitude field f, so a kernel
    decodes a code with one load: t[f] = (f has the sign bit ? -1 : 1) * lut[f & (Qmax)]."""
    fields = np.arange(1 << bits)
    mag = np.asarray(lut, np.int32)[fields & ((1 << (bits - 1)) - 1)]
    return np.where(fields >> (bits - 1), -mag, mag).astype(np.int16)


def helium_levels(lut: np.ndarray, bits: int) -> bool:
    """Whether the Helium kernels take this table (runtime_c/nupes_mve.h, nupes_mve_lut8): every level
    an int8 value times one power of two (quantize --levels int8; uniform and 2-bit tables always)."""
    mags = np.abs(signed_lut(lut, bits).astype(np.int64))
    bits_set = int(np.bitwise_or.reduce(mags))
    e = (bits_set & -bits_set).bit_length() - 1 if bits_set else 0
    return int((mags >> e).max()) <= 127


def helium_table_kernel(node, bits: int) -> bool:
    """Whether the kernel ``conv_kernel`` gives this layer at ``bits`` has a Helium form for a table
    of int8 levels: nupes_conv2d_im2col_p4 / _p2, or nupes_conv2d_window (any width). Only these
    layers get int8 levels from quantize --levels int8 (elsewhere they would cost precision for
    nothing: the other kernels run the same loop either way)."""
    if node.op != "conv2d" or node.attrs["groups"] != 1:
        return False
    c_in, kh, kw = (int(v) for v in node.weight.shape[1:])
    stride, pads = tuple(node.attrs["stride"][:2]), node.attrs["pads"]
    kernel, _ = conv_kernel(False, c_in, 0, kh, kw, stride, pads, im2col=bits if bits in (2, 4) else 0)
    return kernel in ("nupes_conv2d_im2col_p4", "nupes_conv2d_im2col_p2", "nupes_conv2d_window")


def int16_level_convs(qm: QuantModel) -> list[str]:
    """Convolutions whose kernel has a Helium form for int8 levels (``helium_table_kernel``) but
    whose table holds int16 levels: on a Cortex-M55 they run the DSP loop."""
    return [node.name for node in qm.graph.nodes
            if isinstance(qm.params.get(node.name), IntLayer) and helium_table_kernel(node, qm.params[node.name].bits)
            and not helium_levels(qm.params[node.name].lut, qm.params[node.name].bits)]


def table_free_adds(qm: QuantModel) -> set[str]:
    """Names of the add nodes a flash-budget search built without rescaling tables (model.nq
    meta.flash_budget.table_free_adds; names from the file are only compared, never emitted)."""
    names = qm.meta.get("flash_budget", {}).get("table_free_adds", []) if isinstance(qm.meta.get("flash_budget"), dict) else []
    adds = {n.name for n in qm.graph.nodes if n.op == "add"}
    if not isinstance(names, list) or not all(isinstance(n, str) and n in adds for n in names):
        raise NupesError("meta.flash_budget.table_free_adds must list add layers of the model")
    return set(names)


def inplace_slots(h: int, w: int, c_in: int, oh: int, ow: int, c_out: int, kh: int, sh: int, pt: int,
                  band: int = 1) -> int:
    """Rows of output a convolution computed over its own input (nupes_conv2d_inplace, ``band`` rows
    per kernel call) holds before they can be copied home: output row j is copied once no later output
    row reads the input bytes it lands on. The same loop as the C, run here to size its ring (a
    multiple of ``band``, so a band never wraps)."""
    row_in, row_out = w * c_in, ow * c_out
    flushed, need = 0, band
    for r in range(0, oh, band):
        rows = min(band, oh - r)
        need = max(need, r - flushed + band)
        last = r + rows - 1
        first_needed = max(0, (last + 1) * sh - pt)
        while flushed <= last and (last + 1 == oh or (flushed + 1) * row_out <= first_needed * row_in):
            flushed += 1
    return -(-need // band) * band


def inplace_band(h: int, w: int, c_in: int, oh: int, ow: int, c_out: int, kh: int, sh: int, pt: int):
    """(rows per kernel call, ring rows) for a convolution over its own input: the most rows per call
    (fewer calls, less per-call set-up) whose ring stays within a quarter of the output; None when
    even one row per call needs more."""
    for band in (8, 6, 4, 3, 2, 1):
        if band > oh:
            continue
        slots = inplace_slots(h, w, c_in, oh, ow, c_out, kh, sh, pt, band)
        if slots * ow * c_out * 4 <= oh * ow * c_out:
            return band, slots
    return None


ELEMENTWISE_OPS = ("add", "mul", "relu", "relu6", *TABLE_OPS)  # out[i] from in[i] only: safe over an input


DW_GROUP = 4  # channels nupes_depthwise_inplace computes at a time (one DSP word per pixel)


def _inplace(g, real: list, alias: dict, storage, skip: set = frozenset()) -> dict[str, tuple]:
    """The steps that write their output over an input's storage (the least-RAM plan), aliasing the
    output to it in ``alias``: an input that dies at that step, is not the caller's input, and holds
    no part of the caller's output. Elementwise ops (add, mul, activations) take any such input of
    the output's shape; a convolution takes its own input when the rows it holds aside
    (inplace_band) are at most a quarter of its output. Returns node name -> (rows per kernel call,
    ring rows) as ("rows", band, ring rows), ("channels", 4) for a depthwise convolution run four
    channels at a time through a buffer (nupes_depthwise_inplace), ("elementwise",) for the rest."""
    last_read: dict[str, int] = {}
    for i, node in enumerate(real):
        for src in node.inputs:
            last_read[src] = i
    for t, a in alias.items():  # a Flatten / Reshape output is read where its consumers read it
        last_read[a] = max(last_read.get(a, -1), last_read.get(t, -1))

    def dies_at(root: str, i: int) -> bool:
        return all(last_read.get(t, -1) <= i for t in g.shapes if storage(t) == root)

    chosen: dict[str, int] = {}
    out_root = storage(g.output_name)
    for i, node in enumerate(real):
        if node.output == g.output_name or storage(node.output) == out_root or node.name in skip:
            continue
        candidates = []
        if node.op in ELEMENTWISE_OPS:
            candidates = [t for t in node.inputs if g.shapes[t] == g.shapes[node.output]]
        elif node.op == "conv2d":
            candidates = [node.inputs[0]]
        for src in candidates:
            root = storage(src)
            if root == g.input_name or root == out_root or not dies_at(root, i):
                continue
            how = ("elementwise",)
            if node.op == "conv2d":
                c_in, h, w = g.shapes[src]
                c_out, oh, ow = g.shapes[node.output]
                rows = inplace_band(h, w, c_in, oh, ow, c_out, node.weight.shape[2], node.attrs["stride"][0],
                                    node.attrs["pads"][0])
                ring = None if rows is None else rows[1] * ow * c_out
                if node.attrs["groups"] == c_in == c_out and c_in % DW_GROUP == 0 and c_in > DW_GROUP \
                        and (ring is None or DW_GROUP * (h * w + oh * ow) <= ring):
                    how = ("channels", DW_GROUP)  # nupes_depthwise_inplace: no ring, one kernel call per group
                elif rows is None:
                    continue
                else:
                    how = ("rows", *rows)
            alias[node.output] = root
            chosen[node.name] = how
            break
    return chosen


TILE_OPS = ("conv2d", "maxpool2d", "avgpool2d")  # layers a tiled chain can hold (nupes_tiled_chain)
CHAIN_MAX = 8  # NUPES_CHAIN_MAX in runtime_c/nupes_kernels.h
# Each band calls every layer's kernel once, and a call has its set-up (weights decoded, requantization
# records): more bands, less RAM, more instructions. DEFAULT_BANDS is the least-RAM plan's;
# --ram-budget goes further.
DEFAULT_BANDS = 4
BAND_LEVELS = (0, DEFAULT_BANDS, 16, 1 << 30)  # the least-RAM plans tried for a budget, fastest first (0: no tiling)


def stage_geom(g, node) -> tuple:
    """(in_h, in_w, in_c, out_h, out_w, out_c, k_h, k_w, stride_h, stride_w, pad_t, pad_l), as in C."""
    c_in, h, w = g.shapes[node.inputs[0]]
    c_out, oh, ow = g.shapes[node.output]
    kh, kw = node.weight.shape[2:] if node.op == "conv2d" else node.attrs["kernel"]
    return (h, w, c_in, oh, ow, c_out, int(kh), int(kw), *node.attrs["stride"][:2], *node.attrs["pads"][:2])


def _chain_rows(geoms: list[tuple], r: int, band: int) -> tuple[list[int], list[int]]:
    """nupes_chain_rows: the output rows each layer needs for the last layer's rows [r, r + band)."""
    n = len(geoms)
    lo, hi = [0] * n, [0] * n
    lo[-1], hi[-1] = r, min(r + band, geoms[-1][3])
    for k in range(n - 1, 0, -1):
        h, _, _, _, _, _, kh, _, sh, _, pt, _ = geoms[k]
        lo[k - 1] = max(lo[k] * sh - pt, 0)
        hi[k - 1] = min((hi[k] - 1) * sh - pt + kh, h)
    return lo, hi


def tiled_rows(geoms: list[tuple], band: int, last_in_tile: bool = False) -> tuple[list[int], list[int]]:
    """The loop of nupes_tiled_chain, run here: (bytes of each layer's tile, output rows each layer
    computes in all). A tile keeps the rows the next band needs again, so each row is computed once;
    ``last_in_tile``: the last layer's band goes to a tile too (nupes_tiled_residual)."""
    n = len(geoms)
    tiles, computed, have = [0] * n, [0] * n, [0] * n
    for r in range(0, geoms[-1][3], band):
        lo, hi = _chain_rows(geoms, r, band)
        for k in range(n):
            start = max(lo[k], have[k]) if k < n - 1 else lo[k]
            computed[k] += max(hi[k] - start, 0)
            have[k] = hi[k]
            if k < n - 1 or last_in_tile:
                tiles[k] = max(tiles[k], (hi[k] - lo[k]) * geoms[k][4] * geoms[k][5])
    return tiles[: n if last_in_tile else n - 1], computed


def residual_slots(geoms: list[tuple], band: int) -> int:
    """Rows of sums nupes_tiled_residual holds before they go home (its loop, run here): a row waits
    until the next band's first call no longer reads the input row it lands on; a multiple of band."""
    n, out_h = len(geoms), geoms[-1][3]
    flushed, need, have0 = 0, band, 0
    for r in range(0, out_h, band):
        lo, hi = _chain_rows(geoms, r, band)
        rows = hi[-1] - lo[-1]
        have0 = hi[0]
        need = max(need, r + rows - flushed)
        keep = out_h
        if r + band < out_h:
            nlo, _ = _chain_rows(geoms, r + band, band)
            start = max(have0, nlo[0]) if n > 1 else nlo[0]
            keep = max(start * geoms[0][8] - geoms[0][10], 0)
        flushed = max(flushed, min(r + rows, keep))
    return -(-need // band) * band


def tile_band(g, chain: list, max_bands: int = DEFAULT_BANDS) -> tuple[int, list[int], int] | None:
    """(band, each tile's bytes, ring bytes) for a chain: the fewest rows per band that make at most
    ``max_bands`` bands; None if only the whole output in one band does. A chain that ends in an add
    is a residual block (nupes_tiled_residual): its ring holds the sums not yet written back."""
    residual = chain[-1].op == "add"
    geoms = [stage_geom(g, n) for n in (chain[:-1] if residual else chain)]
    out_h = geoms[-1][3]
    band = max(1, -(-out_h // max_bands))
    if band >= out_h:
        return None
    tiles, _ = tiled_rows(geoms, band, residual)
    ring = residual_slots(geoms, band) * geoms[-1][4] * geoms[-1][5] if residual else 0
    return band, tiles, ring


def reader_counts(g) -> Counter:
    """How many times each tensor is read (an input read twice by one node counts twice)."""
    return Counter(t for n in g.nodes for t in n.inputs)


def residual_add(g, real: list, part: list, alias: dict, readers: Counter):
    """The add that makes ``part`` a residual block: the next step, adding the part's output to the
    part's own input X, all three of one shape, X read by nothing else and no other name's bytes
    (the block's result can then be written back over X); else None. ``readers``: reader_counts(g)."""
    i = real.index(part[-1])
    if i + 1 >= len(real):
        return None
    add, x, y = real[i + 1], part[0].inputs[0], part[-1].output
    if add.op != "add" or sorted(add.inputs) != sorted([x, y]) or x == y or add.output == g.output_name:
        return None
    if not (g.shapes[add.output] == g.shapes[x] == g.shapes[y]) or readers[x] != 2 or readers[y] != 1:
        return None
    if x == g.input_name or x in alias or x in alias.values() or add.output in alias.values():
        return None
    return add


def tile_runs(g, real: list, alias: dict) -> list[list]:
    """Runs of consecutive steps (convolutions and poolings, at most CHAIN_MAX) where each layer's
    output is read by the next one only, as its whole input, and is neither the model's output nor
    another name's bytes: any part of one can be a tiled chain (nupes_tiled_chain), its intermediate
    tensors never whole."""
    aliased = set(alias.values())
    readers = reader_counts(g)
    runs, run = [], []

    def links(prev, node) -> bool:
        return (node.op in TILE_OPS and node.inputs == [prev.output] and readers[prev.output] == 1
                and prev.output != g.output_name and prev.output not in aliased and prev.output not in alias
                and len(run) < CHAIN_MAX)

    for node in real:
        if run and links(run[-1], node):
            run.append(node)
            continue
        if len(run) > 1:
            runs.append(run)
        run = [node] if node.op in TILE_OPS else []
    if len(run) > 1:
        runs.append(run)
    return runs


def choose_chains(g, runs: list[list], max_bands: int, arena_of, real: list = (), alias: dict | None = None) -> list[list]:
    """The chains to tile, greedily: each time the part of a run (two layers or more, or one and the
    add that makes it a residual block; within the band and halo bounds) whose tiling lowers the
    arena most, until none lowers it (a chain tiled for nothing only costs time). ``arena_of(chains)``
    is the arena with those chains tiled."""
    chosen: list[list] = []
    best = arena_of(chosen)
    taken: set[str] = set()
    real, readers = list(real), reader_counts(g)
    while True:
        pick, pick_arena = None, best
        for run in runs:
            for i in range(len(run)):
                for j in range(i + 1, len(run) + 1):
                    part = run[i:j]
                    if any(n.name in taken for n in part):
                        continue
                    add = residual_add(g, real, part, alias or {}, readers) if real else None
                    for cand in (part, part + [add]) if add is not None else (part,):
                        if len(cand) < 2 or any(n.name in taken for n in cand) or tile_band(g, cand, max_bands) is None:
                            continue
                        arena = arena_of(chosen + [cand])
                        if arena < pick_arena:
                            pick, pick_arena = cand, arena
        if pick is None:
            return chosen
        chosen.append(pick)
        taken.update(n.name for n in pick)
        best = pick_arena


def _move_init(move) -> str:
    """A nupes_move_t initializer: count[5], src_off, src_stride[5], dst_off, dst_stride[5]."""
    m = [int(v) for v in move]
    return (f"{{ {', '.join(map(str, m[0:5]))} }}, {m[5]}, {{ {', '.join(map(str, m[6:11]))} }}, {m[11]}, "
            f"{{ {', '.join(map(str, m[12:17]))} }}")


@dataclass
class _Layout:
    alias: dict
    inplace_steps: dict
    out_store: str
    output_in_arena: bool
    first: dict
    last: dict
    sizes: dict
    offsets: dict
    pend: dict
    tiles: dict
    arena_tensors: list
    arena_bytes: int
    arena_naive: int
    virtual: set


def _arena_layout(g, real: list, alias: dict, storage, inplace_steps: dict, tiled: list, max_bands: int,
                  scratch_bytes: dict | None = None) -> _Layout:
    """Tensor lifetimes (in steps) and greedy first-fit offsets. A tiled chain's steps run as one:
    its input lives and its output and two tiles exist through all of them, and its intermediate
    tensors take no arena. ``scratch_bytes`` (step → bytes): the kernels' scratch placed in the arena."""
    out_store = storage(g.output_name)
    output_in_arena = out_store == g.input_name or out_store != g.output_name
    index = {n.name: i for i, n in enumerate(real)}
    span: dict[int, tuple[int, int]] = {}  # step → the steps of its chain
    virtual: set[str] = set()
    for c in tiled:
        lo, hi = index[c[0].name], index[c[-1].name]
        for n in c:
            span[index[n.name]] = (lo, hi)
        virtual.update(n.output for n in c[:-1])
    first: dict[str, int] = {}
    last: dict[str, int] = {}
    for i, node in enumerate(real):
        lo, hi = span.get(i, (i, i))
        t = storage(node.output)
        if t not in virtual:
            first[t] = min(first.get(t, lo), lo)
            last[t] = max(last.get(t, hi), hi)
        for src in node.inputs:
            s = storage(src)
            if s not in virtual:
                last[s] = max(last.get(s, hi), hi)
    arena_tensors = [t for t in first if t != g.input_name and not (t == out_store and not output_in_arena)]
    if output_in_arena and out_store in first:
        last[out_store] = len(real)  # copied out after the last step
    sizes: dict[str, int] = {}
    for t in g.shapes:  # a storage holds the largest tensor aliased to it (a conv written over its input)
        s = storage(t)
        if s in arena_tensors:
            sizes[s] = max(sizes.get(s, 0), _hwc_size(g.shapes[t]))
    pend: dict[str, str] = {}  # in-place conv -> its rows held aside or channel-group buffer (that step only)
    for i, node in enumerate(real):
        how = inplace_steps.get(node.name, ("elementwise",))
        if how[0] == "rows":  # a convolution: the rows it holds aside
            c_out, _, ow = g.shapes[node.output]
            buf, nbytes = f"__rows_{i}", how[2] * ow * c_out
        elif how[0] == "channels":  # a depthwise convolution: one group's input and output planes
            (_, h, w), (_, oh, ow) = g.shapes[node.inputs[0]], g.shapes[node.output]
            buf, nbytes = f"__group_{i}", how[1] * (h * w + oh * ow)
        else:
            continue
        pend[node.name] = buf
        sizes[buf] = nbytes
        first[buf] = last[buf] = i
        arena_tensors.append(buf)
    if scratch_bytes:  # the kernels' scratch as arena tensors of their steps (a chain's: all of its steps)
        for i, node in enumerate(real):
            lo, hi = span.get(i, (i, i))
            need = max(scratch_bytes.get(j, 0) for j in range(lo, hi + 1))
            if i == hi and need:
                buf = f"__scratch_{lo}"
                sizes[buf], first[buf], last[buf] = need, lo, hi
                arena_tensors.append(buf)
    tiles: dict[str, tuple] = {}  # chain's first layer -> (band, [its tiles], ring or None): tensors of its steps
    for c in tiled:
        band, tile_bytes, ring = tile_band(g, c, max_bands)
        lo, hi = index[c[0].name], index[c[-1].name]
        names = []
        for k, nbytes in [*enumerate(tile_bytes), ("ring", ring)]:
            if k == "ring" and not ring:
                continue
            buf = f"__tile_{lo}_{k}"
            sizes[buf], first[buf], last[buf] = max(nbytes, 1), lo, hi
            arena_tensors.append(buf)
            names.append(buf)
        tiles[c[0].name] = (band, names[:len(tile_bytes)], names[-1] if ring else None)
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
    return _Layout(dict(alias), inplace_steps, out_store, output_in_arena, first, last, sizes, offsets, pend, tiles,
                   arena_tensors, arena_bytes, arena_naive, virtual)


def plan(qm: QuantModel, name: str | None = None, inplace: bool = False, max_bands: int = DEFAULT_BANDS) -> Plan:
    """The C schedule and arena. ``inplace``: the least-RAM plan, for models that do not fit
    otherwise: convolutions whose input dies at them write over it (a few rows held aside; a little
    more time per row), and runs of convolutions and poolings where that lowers the arena are tiled,
    at most ``max_bands`` bands each (their intermediate tensors are never whole)."""
    _validate(qm)
    g = qm.graph
    cname = c_identifier(name or qm.name)
    alias: dict[str, str] = {}  # tensor → the tensor whose bytes it is
    flatten_src: dict[str, tuple] = {}  # flatten output → shape of its input
    for node in g.nodes:
        if node.op in ALIAS_OPS:  # the same bytes under another shape: no step, no copy
            alias[node.output] = alias.get(node.inputs[0], node.inputs[0])
        if node.op == "flatten":  # PyTorch's C, H, W order: folded into the next Linear's columns
            flatten_src[node.output] = g.shapes[node.inputs[0]]

    def storage(t: str) -> str:
        while t in alias:
            t = alias[t]
        return t

    real = [n for n in g.nodes if n.op not in ALIAS_OPS]
    base_alias = dict(alias)

    scratch_need = {i: 2 * step_scratch(qm, n, flatten_src) for i, n in enumerate(real)}
    scratch_max = (max(scratch_need.values(), default=0) + ALIGN - 1) // ALIGN * ALIGN

    def layout(tiled: list, scratch_in_arena: bool = False, write_over: bool = True) -> _Layout:
        """The arena with these chains tiled; the rest of the least-RAM plan's choices follow
        (``write_over``: steps written over their inputs where they can be)."""
        al = dict(base_alias)

        def st(t: str) -> str:
            while t in al:
                t = al[t]
            return t
        skip = {n.name for c in tiled for n in c}
        for c in tiled:
            if c[-1].op == "add":  # a residual block: its result is written back over its input
                al[c[-1].output] = st(c[0].inputs[0])
        chosen = _inplace(g, real, al, st, skip) if inplace and write_over else {}
        return _arena_layout(g, real, al, st, chosen, tiled, max_bands, scratch_need if scratch_in_arena else None)

    def need(lay: _Layout, scratch_in_arena: bool) -> int:
        return lay.arena_bytes + (0 if scratch_in_arena else scratch_max)

    runs = tile_runs(g, real, base_alias) if inplace and max_bands > 1 else []
    # the least-RAM plan also tries the kernels' scratch inside the arena, each step's where that
    # step's tensors leave room (a first layer's large scratch beside its output only)
    # and without writing over inputs: a storage then holds one tensor, and first-fit can pack better
    options = []
    for in_arena, write_over in ([(False, True), (True, True), (False, False), (True, False)] if inplace
                                 else [(False, False)]):
        chains = choose_chains(g, runs, max_bands, lambda c: need(layout(c, in_arena, write_over), in_arena),
                               real, base_alias) if runs else []
        lay = layout(chains, in_arena, write_over)
        options.append((need(lay, in_arena), write_over, in_arena, chains, lay))
    _, _, scratch_in_arena, chains, lay = min(options, key=lambda o: o[:3])  # a tie: the fewer extra steps
    alias.clear()
    alias.update(lay.alias)
    inplace_steps, out_store, output_in_arena = lay.inplace_steps, lay.out_store, lay.output_in_arena
    first, last, sizes, offsets, pend, arena_tensors = lay.first, lay.last, lay.sizes, lay.offsets, lay.pend, lay.arena_tensors
    arena_bytes, arena_naive, tiles = lay.arena_bytes, lay.arena_naive, lay.tiles
    chain_of = {c[0].name: c for c in chains}
    index_of = {n.name: i for i, n in enumerate(real)}
    in_chain = {n.name: c[0].name for c in chains for n in c}

    def scr(i: int) -> str:
        """Step i's scratch: the model's scratch buffer, or its place in the arena."""
        if not scratch_in_arena:
            return "scratch"
        buf = f"__scratch_{i}"
        return f"((int16_t *)(void *)(arena + {offsets[buf]}))" if buf in offsets else "scratch"

    def ptr(t: str) -> str:
        s = storage(t)
        if s == g.input_name:
            return "in"
        if s == out_store and not output_in_arena:
            return "out"
        return f"(arena + {offsets[s]})"

    layers: list[LayerData] = []
    adds: dict[str, IntAdd] = {}
    no_tables, table_free = table_free_adds(qm), set()
    steps: list[Step] = []
    scratch = 0
    table_ops = 0
    lstms: dict[str, dict] = {}  # C name → an LSTM's flash data (lstm_data)
    svdfs: dict[str, dict] = {}  # C name → an SVDF's flash data (svdf_data)
    carry = carries(qm)
    states: list[dict] = []  # a carry model's state buffers (Plan.states)
    stages: dict[str, list[str]] = {}  # a tiled chain's first layer → its nupes_stage_t initializers
    for i, node in enumerate(real):
        p = qm.params.get(node.name)
        ins = [ptr(t) if t not in lay.virtual else "" for t in node.inputs]
        out = ptr(node.output) if node.output not in lay.virtual else ""
        stage = ""
        lname = f"nupes_{cname}_layer{i}"  # the step's C data: derived (never a name from the file)
        if node.op in ("conv2d", "linear"):
            rows = weights_hwc(p.codes, node.op, flatten_src.get(node.inputs[0]))
            use_im2col, identity8 = _conv_uses_im2col(node, p)
            if node.op == "linear":
                kernel, fc = fc_kernel(p, rows)
            elif use_im2col:
                fc = im2col_data(p, rows)
            elif identity8:
                # identity table (uniform 8-bit): the codes are stored as int8 levels and the table is
                # omitted (lut = NULL in C; nupes_decode_row sign-extends bytes), 512 bytes less per layer
                fc = {"packed": np.concatenate([rows.astype(np.int8).view(np.uint8).ravel(), np.zeros(1, np.uint8)]),
                      "row_bytes": rows.shape[1], "bias": np.asarray(p.bias), "lut": None}
            else:
                packed = pack_rows(rows, p.bits)  # + a guard byte: the decoder may touch the byte after a row
                fc = {"packed": np.concatenate([packed.ravel(), np.zeros(1, np.uint8)]), "row_bytes": packed.shape[1],
                      "bias": np.asarray(p.bias)}
            lut = fc["lut"] if "lut" in fc else signed_lut(p.lut, p.bits)
            layers.append(LayerData(lname, node.name, fc["packed"], fc["row_bytes"], p.bits, lut,
                                    fc["bias"], p.mult, p.shift, p, fc.get("pairs"), fc.get("lshift", 0)))
        if node.op == "conv2d":
            c_in, h, w = g.shapes[node.inputs[0]]
            c_out, oh, ow = g.shapes[node.output]
            _, _, kh, kw = node.weight.shape
            geom = _geom(node, (h, w, c_in, oh, ow, c_out, kh, kw, *node.attrs["stride"][:2], *node.attrs["pads"][:2]))
            kernel, entries = conv_kernel(node.attrs["groups"] != 1, c_in, c_out, kh, kw, node.attrs["stride"][:2],
                                          node.attrs["pads"], im2col=p.bits if use_im2col else 0)
            scratch = max(scratch, entries)
            assert 2 * entries == scratch_need[i]  # step_scratch makes the same choice
            how = inplace_steps.get(node.name, ("",))
            if how[0] == "rows":  # written over its own input, a band of rows at a time (nupes_conv2d_inplace)
                call = (f"{{ static const nupes_conv_geom_t g = {geom}; nupes_conv2d_inplace({kernel}, {out}, &g, "
                        f"&{lname}, {scr(i)}, (arena + {offsets[pend[node.name]]}), {how[1]}, {how[2]}); }}")
            elif how[0] == "channels":  # a depthwise convolution over its own input, four channels at a time
                kernel = "nupes_depthwise_inplace"
                call = (f"{{ static const nupes_conv_geom_t g = {geom}; {kernel}({out}, &g, &{lname}, {scr(i)}, "
                        f"(arena + {offsets[pend[node.name]]})); }}")
            else:
                call = (f"{{ static const nupes_conv_geom_t g = {geom}; {kernel}({ins[0] if ins else ''}, {out}, &g, "
                        f"&{lname}, {scr(i)}); }}")
            stage = f"{{ {kernel}, &{lname}, 0, 0, 0, {geom} }}"
        elif node.op == "linear":
            k = node.weight.shape[1]
            if kernel == "nupes_fully_connected":
                scratch = max(scratch, k)  # one decoded row (the others decode as they multiply)
            scratch_arg = f", {scr(i)}" if kernel == "nupes_fully_connected" else ""
            call = f"{kernel}({ins[0]}, {out}, {k}, {node.weight.shape[0]}, &{lname}{scratch_arg});"
        elif node.op == "add":
            adds[lname] = p
            if node.name in no_tables:
                table_free.add(lname)
            kernel = "nupes_add_computed" if node.name in no_tables else "nupes_add"
            call = f"{kernel}({ins[0]}, {ins[1]}, {out}, {_hwc_size(g.shapes[node.output])}, &{lname});"
        elif node.op in ("maxpool2d", "avgpool2d"):
            lo, hi = clamp_bounds(node, p)
            c, h, w = g.shapes[node.inputs[0]]
            _, oh, ow = g.shapes[node.output]
            kh, kw = node.attrs["kernel"]
            geom = _geom(node, (h, w, c, oh, ow, c, kh, kw, *node.attrs["stride"][:2], *node.attrs["pads"][:2]))
            kernel = "nupes_max_pool2d" if node.op == "maxpool2d" else "nupes_avg_pool2d"
            call = f"{{ static const nupes_conv_geom_t g = {geom}; {kernel}({ins[0] if ins else ''}, {out}, &g, {lo}, {hi}); }}"
            stage = f"{{ 0, 0, {'NUPES_POOL_MAX' if node.op == 'maxpool2d' else 'NUPES_POOL_AVG'}, {lo}, {hi}, {geom} }}"
        elif node.op == "global_avgpool":
            lo, hi = clamp_bounds(node, p)
            c, h, w = g.shapes[node.inputs[0]]
            kernel = "nupes_global_avg_pool"
            call = f"{kernel}({ins[0]}, {out}, {h * w}, {c}, {lo}, {hi});"
        elif node.op == "mul":
            p = check_mul(node, p)
            shape = g.shapes[node.output]
            c, pixels = shape[0], _hwc_size(shape[1:])
            per_channel = [int(g.shapes[t] != shape) for t in node.inputs]  # a C x 1 x 1 operand
            kernel = "nupes_mul_s8"
            call = (f"{{ static const nupes_mul_params_t m = {{ {p.in1_zp}, {p.in2_zp}, {p.mult}, {p.shift}, "
                    f"{p.out_zp}, {p.act_min}, {p.act_max} }}; {kernel}({ins[0]}, {ins[1]}, {out}, {pixels}, {c}, "
                    f"{per_channel[0]}, {per_channel[1]}, &m); }}")
        elif node.op == "mean":
            c, h, w = g.shapes[node.inputs[0]]
            p = check_mean(node, p, h * w)
            kernel = "nupes_mean_s8"
            call = (f"{{ static const nupes_mean_params_t m = {{ {p.mult}, {p.shift}, {p.in_zp}, {p.out_zp} }}; "
                    f"{kernel}({ins[0]}, {out}, {h * w}, {c}, &m); }}")
        elif node.op in ("maximum", "minimum"):  # on the codes: all three share one quantization
            check_concat(node, qm.act)
            kernel = f"nupes_{node.op}_s8"
            call = f"{kernel}({ins[0]}, {ins[1]}, {out}, {_hwc_size(g.shapes[node.output])});"
        elif node.op in ("relu", "relu6", "clamp"):
            lo, hi = clamp_bounds(node, p)
            kernel = "nupes_clamp"
            call = f"{kernel}({ins[0]}, {out}, {_hwc_size(g.shapes[node.output])}, {lo}, {hi});"
        elif node.op == "concat":
            check_concat(node, qm.act)
            shape = g.shapes[node.output]
            pixels = _hwc_size(shape[1:])
            chans = ", ".join(str(c_int(g.shapes[t][0], *DIM, f"layer '{node.name}': channels")) for t in node.inputs)
            kernel = "nupes_concat_hwc_s8"
            call = (f"{{ const int8_t *const s[{len(ins)}] = {{ {', '.join(ins)} }}; static const int32_t c[{len(ins)}] = "
                    f"{{ {chans} }}; {kernel}(s, c, {len(ins)}, {out}, {pixels}); }}")
        elif node.op == "copy":  # byte moves; the output never overlaps an input (both live at this step)
            sizes_in = [int(np.prod(g.shapes[t])) for t in node.inputs]
            n_out = int(np.prod(g.shapes[node.output]))
            try:
                moves.check_moves(node.attrs["moves"], sizes_in, n_out, fill=node.attrs.get("fill", False))
            except moves.MoveError as e:
                raise _refuse(node, str(e)) from None
            kernel = "nupes_copy_s8"
            call = " ".join(f"{{ static const nupes_move_t m = {{ {_move_init(mv)} }}; {kernel}({src}, {out}, &m); }}"
                            for src, mv in zip(ins, node.attrs["moves"]))
            if node.attrs.get("fill", False):  # a zero insertion: the bytes between hold the zero point
                zp = c_int(qm.act[node.inputs[0]].zero_point, -128, 127, f"layer '{node.name}': zero point")
                call = f"nupes_fill_s8({out}, {c_int(n_out, 1, 1 << 24, 'output size')}, {zp}); {call}"
        elif node.op in ("reduce_max", "mean_reduce"):
            try:
                moves.reduce_positions(node.attrs["reduce"], int(np.prod(g.shapes[node.inputs[0]])),
                                       int(np.prod(g.shapes[node.output])))
            except moves.MoveError as e:
                raise _refuse(node, str(e)) from None
            r = [int(v) for v in node.attrs["reduce"]]
            init = (f"{{ {', '.join(map(str, r[0:5]))} }}, {r[5]}, {{ {', '.join(map(str, r[6:11]))} }}, "
                    f"{{ {', '.join(map(str, r[11:16]))} }}, {{ {', '.join(map(str, r[16:21]))} }}")
            if node.op == "reduce_max":
                kernel = "nupes_reduce_max_s8"
                call = f"{{ static const nupes_reduce_t r = {{ {init} }}; {kernel}({ins[0]}, {out}, &r); }}"
            else:
                p = check_mean(node, p, moves.reduce_count(r))
                kernel = "nupes_mean_reduce_s8"
                call = (f"{{ static const nupes_reduce_t r = {{ {init} }}; static const nupes_mean_params_t m = "
                        f"{{ {p.mult}, {p.shift}, {p.in_zp}, {p.out_zp} }}; {kernel}({ins[0]}, {out}, &r, &m); }}")
        elif node.op == "lstm":
            kernel = "nupes_lstm_s8"
            lstms[lname] = lstm_data(node, p, g.shapes[node.inputs[0]], g.shapes[node.output])
            call = f"{kernel}({ins[0]}, {out}, &{lname}, {scr(i)});"
            scratch = max(scratch, 5 * g.shapes[node.output][0])
            if carry:  # the hidden and cell state persist in static buffers; scratch: the gates' rows
                units = c_int(g.shapes[node.output][0], 1, 1 << 16, f"layer '{node.name}': units")
                kernel = "nupes_lstm_s8_carry"
                states += [{"cname": f"{lname}_hidden", "type": "int8_t", "len": units, "reset": int(p.hid_zp),
                            "bytes": units},
                           {"cname": f"{lname}_cell", "type": "int16_t", "len": units, "reset": 0, "bytes": 2 * units}]
                call = f"{kernel}({ins[0]}, {out}, &{lname}, {scr(i)}, {lname}_hidden, {lname}_cell);"
        elif node.op == "svdf":  # no scratch: from the reset state only the newest state values count
            kernel = "nupes_svdf_s8"
            svdfs[lname] = svdf_data(node, p, g.shapes[node.inputs[0]], g.shapes[node.output], carry)
            call = f"{kernel}({ins[0]}, {out}, &{lname});"
            if carry:  # the whole state, filters x memory, in a static int16 buffer
                filters, memory = np.asarray(p.w_time).shape
                kernel = "nupes_svdf_s8_carry"
                reset = int(p.state_zp) if int(p.state_bits) == 8 else 0
                states.append({"cname": f"{lname}_state", "type": "int16_t",
                               "len": c_int(filters * memory, 1, 1 << 24, f"layer '{node.name}': state size"), "reset": reset,
                               "bytes": 2 * filters * memory})
                call = f"{kernel}({ins[0]}, {out}, &{lname}, {c_int(memory, 1, 1 << 20, 'memory')}, {lname}_state);"
        elif node.op in TABLE_OPS:
            table = ", ".join(str(v) for v in check_table(node, p))
            kernel = "nupes_lut_s8"
            call = (f"{{ static const int8_t t[256] = {{ {table} }}; "
                    f"{kernel}({ins[0]}, {out}, {_hwc_size(g.shapes[node.output])}, t); }}")
            table_ops += 1
        elif node.op == "softmax":
            mult, shift, diff_min = check_softmax(node, p, qm.act.get(node.output))
            kernel = "nupes_softmax_s8"
            cols = c_int(_hwc_size(g.shapes[node.output]), 1, 4095, f"layer '{node.name}': classes")
            call = f"{kernel}({ins[0]}, {out}, 1, {cols}, {mult}, {shift}, {diff_min});"
        else:  # pragma: no cover - _validate rejects the rest
            raise _refuse(node, "no kernel")
        profiled = node.name not in in_chain
        if not profiled:  # one call runs the whole chain, at its last step
            head = in_chain[node.name]
            chain = chain_of[head]
            residual = chain[-1].op == "add"
            n_stages = len(chain) - residual
            if stage:
                stages.setdefault(head, []).append(stage)
            band, tile_names, ring = lay.tiles[head]
            band = c_int(band, 1, DIM[1], f"layer '{node.name}': rows per band")
            first_step = index_of[head]
            tiles_c = f"t, {band}, {scr(first_step)}"
            st_c = (f"static const nupes_stage_t st[{n_stages}] = {{ {', '.join(stages.get(head, []))} }}; "
                    f"int8_t *const t[{max(len(tile_names), 1)}] = "
                    f"{{ {', '.join(f'(arena + {offsets[t]})' for t in tile_names) or '0'} }};")
            x = chain[0].inputs[0]
            if node is not chain[-1]:
                call = f"/* run band by band with the layers after it (step {first_step + len(chain) - 1}) */"
            elif residual:  # kernel: this add's own (nupes_add or nupes_add_computed)
                slots = c_int(lay.sizes[ring] // (g.shapes[x][0] * g.shapes[x][2]), 1, DIM[1],
                              f"layer '{node.name}': rows of sums held")  # ring bytes / bytes per row
                call = (f"{{ {st_c} nupes_tiled_residual(st, {n_stages}, {ptr(x)}, {tiles_c}, "
                        f"nupes_{cname}_profile_hook, {first_step}, {kernel}, &{lname}, {int(node.inputs[0] == x)}, "
                        f"(arena + {offsets[ring]}), {slots}); }}")
            else:
                call = (f"{{ {st_c} nupes_tiled_chain(st, {n_stages}, {ptr(x)}, {out}, {tiles_c}, "
                        f"nupes_{cname}_profile_hook, {first_step}); }}")
        steps.append(Step(i, node.name, kernel, call, list(node.inputs), node.output, profiled))

    params = sum(int(np.prod(n.weight.shape)) for n in g.weight_nodes())
    packed_bound = sum((int(np.prod(n.weight.shape)) * qm.params[n.name].bits + 7) // 8 for n in g.weight_nodes())
    report = {
        "params": params,
        "macs": macs(g),
        "flash_weights_bytes": int(sum(L.packed.size for L in layers) + sum(d["bytes"] for d in lstms.values())
                                   + sum(d["bytes"] for d in svdfs.values())),
        # per row: byte padding, and for the pairs kernel the codes padding the row to a group of four
        "flash_weights_bound_bytes": int(packed_bound + sum(
            L.p.bias.size * (1 if L.pairs is None else 2 + 3 * L.bits // 8) + 1 for L in layers)
            + sum(d["bytes"] for d in (*lstms.values(), *svdfs.values()))),  # exact: no packing
        # power LUTs, dense pair tables, and each add's two 256-entry int32 rescaling tables
        "flash_tables_bytes": int(sum((0 if L.lut is None else L.lut.size * 2) + (0 if L.pairs is None else L.pairs.size * 4)
                                      for L in layers)
                                  + ADD_TABLE_BYTES * (len(adds) - len(table_free)) + 256 * table_ops),
        "flash_meta_bytes": int(sum(L.bias.size * 12 for L in layers)),
        "arena_bytes": int(arena_bytes),
        "arena_naive_bytes": int(arena_naive),
        "scratch_bytes": 0 if scratch_in_arena else int(scratch * 2),
        "scratch_in_arena": bool(scratch_in_arena),  # each kernel's scratch is then part of arena_bytes
        "input_bytes": _hwc_size(g.input_shape),
        "output_bytes": _hwc_size(g.output_shape),
    }
    if carry:  # a carry model's static state buffers (a reset model's report is unchanged)
        report["state_bytes"] = int(sum(st["bytes"] for st in states))
    return Plan(name=cname, input_shape=tuple(g.input_shape), output_shape=tuple(g.output_shape),
                input_size=_hwc_size(g.input_shape), output_size=_hwc_size(g.output_shape), layers=layers, adds=adds,
                steps=steps, offsets=offsets, sizes=sizes, arena_bytes=arena_bytes, arena_naive_bytes=arena_naive,
                scratch_entries=1 if scratch_in_arena else max(scratch, 1), output_in_arena=output_in_arena, report=report,
                table_free_adds=table_free, storage=dict(alias), lstms=lstms, svdfs=svdfs, states=states,
                lifetimes={t: (first[t], last[t]) for t in arena_tensors}, inplace=dict(inplace_steps),
                tiled={h: ([n.name for n in chain_of[h]], lay.tiles[h][0],
                           sum(sizes[t] for t in lay.tiles[h][1]) + (sizes[lay.tiles[h][2]] if lay.tiles[h][2] else 0))
                       for h in chain_of})
