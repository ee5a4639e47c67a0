"""Run the IR in PyTorch: the float model, the fake-quant model, and activation recording.

One interpreter serves three uses: float evaluation (no options), fake quantization (``act_q``
maps tensor names to (scale, zero_point) and every listed tensor is rounded to int8 and back,
``weights`` replaces layer weights), and calibration (``record`` receives every tensor).
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from . import moves
from .ir import Graph, Node


def fake_quant(t: torch.Tensor, scale: float, zp: int) -> torch.Tensor:
    """Round to int8 with (scale, zero_point) and back; straight-through gradient."""
    q = torch.clamp(torch.round(t / scale) + zp, -128, 127)
    return t + ((q - zp) * scale - t).detach()


def apply_act(y: torch.Tensor, act: str) -> torch.Tensor:
    if act == "relu":
        return F.relu(y)
    if act == "relu6":
        return torch.clamp(y, 0.0, 6.0)
    return y


def conv2d(node: Node, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    pt, pl, pb, pr = node.attrs["pads"]
    if pt == pb and pl == pr:
        return F.conv2d(x, w, b, stride=node.attrs["stride"], padding=(pt, pl), groups=node.attrs["groups"])
    x = F.pad(x, (pl, pr, pt, pb))
    return F.conv2d(x, w, b, stride=node.attrs["stride"], groups=node.attrs["groups"])


def layer_forward(node: Node, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """A weight layer (conv2d or linear) with its fused activation."""
    y = conv2d(node, x, w, b) if node.op == "conv2d" else F.linear(x, w, b)
    return apply_act(y, node.act)


def _device_flat(x: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) or (N, F) -> (N, values) in the device's byte order (H, W, C)."""
    return (x.permute(0, 2, 3, 1) if x.ndim == 4 else x).reshape(len(x), -1)


def _from_device_flat(y: torch.Tensor, shape) -> torch.Tensor:
    if len(shape) == 3:
        c, h, w = shape
        return y.reshape(len(y), h, w, c).permute(0, 3, 1, 2)
    return y.reshape(len(y), *shape)


def _moved(node: Node, xs: list[torch.Tensor]) -> torch.Tensor:
    """copy (TRANSPOSE, STRIDED_SLICE, PACK, ...) and reduce_max: the importer's byte moves."""
    shape = tuple(node.attrs["shape"])
    n_out = int(np.prod(shape))
    flats = [_device_flat(x) for x in xs]
    if node.op == "copy":
        sizes = [f.shape[1] for f in flats]
        index = torch.from_numpy(moves.gather_index(node.attrs["moves"], sizes, n_out))
        joined = torch.cat(flats, dim=1)
        if node.attrs.get("fill", False):  # a zero insertion: index -1 reads the appended 0
            joined = torch.cat([joined, joined.new_zeros(len(joined), 1)], dim=1)
        y = joined[:, index]
    else:
        pos = torch.from_numpy(moves.reduce_positions(node.attrs["reduce"], flats[0].shape[1], n_out))
        y = flats[0][:, pos].amax(dim=2) if node.op == "reduce_max" else flats[0][:, pos].mean(dim=2)
    return _from_device_flat(y, shape)


def lstm(node: Node, x: torch.Tensor, state: dict | None = None) -> torch.Tensor:
    """The float LSTM (TFLite's, no peephole or projection) from a zero state: x (N, F, 1, T) ->
    (N, S, 1, T); gates input, forget, cell, output; the cell state clipped to ±cell_clip when > 0.
    ``state``: a dict (node name -> (h, c)) to start from (absent: zero) and to update (carry mode)."""
    w = torch.from_numpy(np.asarray(node.weight, np.float32))
    b = torch.from_numpy(np.asarray(node.bias, np.float32))
    units, feats = w.shape[1], x.shape[1]
    w_in, w_rec = w[:, :, :feats], w[:, :, feats:]
    clip = float(node.attrs.get("cell_clip", 0.0))
    act = torch.tanh if node.attrs.get("cell_act", "tanh") == "tanh" else torch.sigmoid
    h = x.new_zeros(len(x), units)
    c = x.new_zeros(len(x), units)
    if state is not None and node.name in state:
        h, c = state[node.name]
    out = []
    for t in range(x.shape[3]):
        xt = x[:, :, 0, t]
        pre = [xt @ w_in[g].T + h @ w_rec[g].T + b[g] for g in range(4)]
        c = torch.sigmoid(pre[1]) * c + torch.sigmoid(pre[0]) * act(pre[2])
        if clip > 0:
            c = torch.clamp(c, -clip, clip)
        h = torch.sigmoid(pre[3]) * torch.tanh(c)
        out.append(h)
    if state is not None:
        state[node.name] = (h, c)
    return torch.stack(out, dim=2)[:, :, None, :]


def svdf(node: Node, x: torch.Tensor, state: dict | None = None) -> torch.Tensor:
    """The float SVDF (TFLite's) from a zero state: x (N, I) -> (N, U). Each filter's newest state value is
    its feature dot product; the older values are 0, so each filter contributes its newest time weight
    times that value; rank filters per unit, the bias, then the activation. ``state``: a dict (node
    name -> (N, F, M) activation state) to start from (absent: zero) and to update (carry mode): the
    state moves one step, the newest value is the feature product, each filter sums time weights x state."""
    w = torch.from_numpy(np.asarray(node.weight, np.float32))
    rank, n_in = int(node.attrs["rank"]), x.shape[1]
    a = x @ w[:, :n_in].T  # (N, F)
    if state is not None:
        w_time = w[:, n_in:]  # (F, M)
        prev = state.get(node.name, x.new_zeros(len(x), *w_time.shape))
        st = torch.cat([prev[:, :, 1:], a[:, :, None]], dim=2)
        state[node.name] = st
        y = (st * w_time[None]).sum(dim=2).reshape(len(x), -1, rank).sum(dim=2)
        return apply_act(y + torch.from_numpy(np.asarray(node.bias, np.float32)), node.act)
    y = (a * w[:, -1]).reshape(len(x), -1, rank).sum(dim=2) + torch.from_numpy(np.asarray(node.bias, np.float32))
    return apply_act(y, node.act)


def node_forward(node: Node, xs: list[torch.Tensor], w=None, b=None, state: dict | None = None) -> torch.Tensor:
    a = node.attrs
    if node.op in ("conv2d", "linear"):
        return layer_forward(node, xs[0], w, b)
    if node.op == "maxpool2d":
        pt, pl, pb, pr = a["pads"]
        x = F.pad(xs[0], (pl, pr, pt, pb), value=float("-inf")) if any(a["pads"]) else xs[0]
        return F.max_pool2d(x, a["kernel"], a["stride"])
    if node.op == "avgpool2d":
        return F.avg_pool2d(xs[0], a["kernel"], a["stride"])
    if node.op in ("global_avgpool", "mean"):
        return xs[0].mean(dim=(2, 3), keepdim=True)
    if node.op == "reshape":  # the device's byte order (H, W, C) kept
        x = xs[0].permute(0, 2, 3, 1) if xs[0].ndim == 4 else xs[0]
        shape = a["shape"]
        if len(shape) == 3:
            c, h, w = shape
            return x.reshape(len(x), h, w, c).permute(0, 3, 1, 2)
        return x.reshape(len(x), *shape)
    if node.op == "add":
        return apply_act(xs[0] + xs[1], node.act)
    if node.op == "mul":
        return apply_act(xs[0] * xs[1], node.act)
    if node.op in ("relu", "relu6"):
        return apply_act(xs[0], node.op)
    if node.op == "clamp":
        return torch.clamp(xs[0], a.get("lo"), a.get("hi"))
    if node.op == "maximum":
        return torch.maximum(xs[0], xs[1])
    if node.op == "minimum":
        return torch.minimum(xs[0], xs[1])
    if node.op == "flatten":
        return xs[0].reshape(xs[0].shape[0], -1)
    if node.op == "softmax":
        return torch.softmax(xs[0] * a.get("beta", 1.0), dim=-1)
    if node.op == "concat":
        return torch.cat(xs, dim=1)
    if node.op in ("copy", "reduce_max", "mean_reduce"):
        return _moved(node, xs)
    if node.op == "sigmoid":
        return torch.sigmoid(xs[0])
    if node.op == "tanh":
        return torch.tanh(xs[0])
    if node.op == "hardswish":
        return F.hardswish(xs[0])
    if node.op == "requantize":  # TFLite's int8 -> int8 QUANTIZE: the same real values, another scale
        return xs[0]
    if node.op == "leaky_relu":
        return F.leaky_relu(xs[0], a["alpha"])
    if node.op == "lstm":
        return lstm(node, xs[0], state)
    if node.op == "svdf":
        return svdf(node, xs[0], state)
    raise ValueError(node.op)  # pragma: no cover


def run(graph: Graph, x: torch.Tensor, *, weights: dict | None = None, act_q: dict | None = None,
        record: Callable[[str, torch.Tensor], None] | None = None, stop_after: str | None = None,
        softmax: bool = False, state: dict | None = None) -> torch.Tensor:
    """Run the graph on a batch; returns the output tensor (logits unless ``softmax``).
    ``state``: the stateful nodes' state to start from and update (run_numpy's carry), else zero.

    ``weights``: node name -> (weight, bias) tensors replacing the float ones.
    ``act_q``: tensor name -> (scale, zero_point) for fake quantization.
    ``stop_after``: return that tensor instead of the graph output.
    """
    weights = weights or {}
    env: dict[str, torch.Tensor] = {}

    def put(name: str, t: torch.Tensor) -> None:
        if act_q is not None and name in act_q:
            t = fake_quant(t, *act_q[name])
        env[name] = t
        if record is not None:
            record(name, t)

    put(graph.input_name, x)
    for node in graph.nodes:
        xs = [env[i] for i in node.inputs]
        w = b = None
        if node.op in ("conv2d", "linear"):
            w, b = weights.get(node.name) or (torch.from_numpy(node.weight), torch.from_numpy(node.bias))
        put(node.output, node_forward(node, xs, w, b, state))
        if node.output == stop_after:
            return env[node.output]
    out = env[graph.output_name]
    return torch.softmax(out, dim=-1) if softmax and graph.output_softmax else out


def run_numpy(graph: Graph, x: np.ndarray, batch: int = 256, carry: bool = False, **kw) -> np.ndarray:
    """``run`` over a NumPy array in batches, without gradients; returns a NumPy array. ``carry``: the
    rows are one sequence, run one at a time with the stateful nodes' state carried from row to row
    (a "carry" model, nupes_edge/state.py), from the zero state."""
    outs = []
    with torch.no_grad():
        if carry:
            state: dict = {}
            for i in range(len(x)):
                outs.append(run(graph, torch.from_numpy(np.ascontiguousarray(x[i:i + 1], np.float32)), state=state,
                                **kw).numpy())
            return np.concatenate(outs) if outs else np.zeros((0,) + graph.output_shape, np.float32)
        for i in range(0, len(x), batch):
            outs.append(run(graph, torch.from_numpy(np.ascontiguousarray(x[i:i + batch], np.float32)), **kw).numpy())
    return np.concatenate(outs) if outs else np.zeros((0,) + graph.output_shape, np.float32)


def quantized_input(graph: Graph, x: torch.Tensor, node: Node, weights: dict, act_q: dict) -> torch.Tensor:
    """The input ``node`` sees when the layers in ``weights`` are quantized and every tensor is
    fake-quantized with ``act_q`` (used by layer-wise reconstruction and bias correction)."""
    src = node.inputs[0]
    if src == graph.input_name:
        return fake_quant(x, *act_q[src])
    return run(graph, x, weights=weights, act_q=act_q, stop_after=src)
