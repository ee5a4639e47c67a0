"""Import a PyTorch model (nn.Module + example input, or a torch.export .pt2 file) into the IR.

Works on torch.export's ATen graph, both the default (training) op set and the decomposed core
op set, so a .pt2 saved either way imports. BatchNorm is folded into the producing conv/linear,
ReLU/ReLU6 are fused into their producer, a final Softmax is recorded and left to the caller.
"""
from __future__ import annotations

import operator
import os
import re
import warnings

import numpy as np
import torch

from ..errors import NupesError
from ..ir import Graph, Node, infer_shapes

aten = torch.ops.aten
# elementwise activations run as 256-entry int8 tables (intref/lut_ops.py), by IR op name
TABLE_OPS = {aten.sigmoid.default: "sigmoid", aten.sigmoid_.default: "sigmoid", aten.tanh.default: "tanh",
             aten.tanh_.default: "tanh", aten.hardswish.default: "hardswish", aten.hardswish_.default: "hardswish"}


def import_module(module: torch.nn.Module, example_input: torch.Tensor, name: str = "model") -> Graph:
    """Export ``module`` (eval mode) with ``example_input`` (batch first) and import it."""
    module = module.eval()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ep = torch.export.export(module, (example_input,))
    except Exception as e:  # torch raises many types; the user needs the reason in one line
        raise NupesError(f"{name}: torch.export failed: {str(e).splitlines()[0]}") from None
    return import_exported(ep, origin=name)


def import_pt2(path: str) -> Graph:
    """Import a program saved with ``torch.export.save``."""
    if not os.path.isfile(path):
        raise NupesError(f"{path}: no such file")
    from .pt2_safe import load_pt2

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ep = load_pt2(path)
    except NupesError:
        raise
    except Exception as e:
        raise NupesError(f"{path}: not a readable torch.export (.pt2) file: {str(e).splitlines()[0]}") from None
    return import_exported(ep, origin=os.path.basename(path))


def _source(fx_node, origin: str) -> str:
    parts = []
    stack = fx_node.meta.get("nn_module_stack") or {}
    if stack:
        path, cls = list(stack.values())[-1]
        cls = getattr(cls, "__name__", str(cls)).split(".")[-1]
        parts.append(f"module '{path}' ({cls})" if path else f"module {cls}")
    trace = fx_node.meta.get("stack_trace") or ""
    m = re.findall(r'File "([^"]+)", line (\d+)', trace)
    if m:
        f, line = m[-1]
        parts.append(f"{os.path.basename(f)}:{line}")
    parts.append(f"in {origin}")
    return ", ".join(parts)


def _one(v, default) -> tuple[int, int]:
    """A 1-D operator's size as the (H, W) pair of its 2-D form: (1, v) (a sequence is one row)."""
    if v is None or (isinstance(v, (list, tuple)) and len(v) == 0):
        v = default
    if isinstance(v, (list, tuple)):
        if len(v) != 1:
            raise ValueError(f"{list(v)} is not one size")
        v = v[0]
    return (1, int(v))


# The aten ops _Importer.call maps (kept equal to its branches by tests/test_importers_torch.py)
SUPPORTED_TARGETS = {
    aten._adaptive_avg_pool2d.default, aten._native_batch_norm_legit_no_training.default, aten._softmax.default,
    aten._unsafe_view.default, aten.adaptive_avg_pool1d.default, aten.adaptive_avg_pool2d.default,
    aten.add.Tensor, aten.add_.Tensor, aten.addmm.default, aten.alias.default, aten.avg_pool1d.default,
    aten.avg_pool2d.default, aten.batch_norm.default, aten.cat.default, aten.clamp.default, aten.clone.default,
    aten.contiguous.default, aten.conv1d.default, aten.conv1d.padding, aten.conv2d.default, aten.conv2d.padding,
    aten.conv_transpose1d.default, aten.conv_transpose2d.input,
    aten.convolution.default, aten.detach.default, aten.dropout.default, aten.feature_dropout.default,
    aten.flatten.using_ints, aten.hardswish.default, aten.hardswish_.default, aten.hardtanh.default,
    aten.hardtanh_.default, aten.leaky_relu.default, aten.leaky_relu_.default, aten.linear.default,
    aten.max_pool1d.default, aten.max_pool1d_with_indices.default, aten.max_pool2d.default,
    aten.max_pool2d_with_indices.default, aten.mean.dim, aten.mul.Tensor, aten.mul_.Tensor,
    aten.permute.default, aten.relu.default, aten.relu_.default, aten.reshape.default, aten.sigmoid.default,
    aten.sigmoid_.default, aten.softmax.int, aten.t.default, aten.tanh.default, aten.tanh_.default,
    aten.upsample_nearest2d.default, aten.upsample_nearest2d.vec, aten.view.default, aten.zeros.default,
    aten.lstm.input, aten.select.int,
}

# Why some ops a user may expect are refused (named in the refusal)
WHY_NOT = {"aten.gru.input": "TFLite Micro has no GRU kernel to be exact with (nn.LSTM is supported)"}


def _pair(v, default=None) -> tuple[int, int]:
    if v is None or (isinstance(v, (list, tuple)) and len(v) == 0):
        v = default
    if isinstance(v, int):
        return (v, v)
    v = list(v)
    return (int(v[0]), int(v[-1])) if len(v) in (1, 2) else tuple(v)  # type: ignore[return-value]


class _Importer:
    def __init__(self, ep, origin: str):
        self.ep = ep
        self.origin = origin
        self.nodes: list[Node] = []
        self.env: dict = {}  # fx node -> ("t", tensor name) | ("p", np.ndarray) | python value
        self.producer: dict[str, Node] = {}  # IR tensor -> node producing it
        self.softmax_tensor: str | None = None
        self.sequences: set[str] = set()  # IR tensors that are an LSTM's N x T x H output (see lstm)

    # -- helpers -------------------------------------------------------------------------------
    def err(self, fx_node, msg: str) -> NupesError:
        return NupesError(f"node '{fx_node.name}' ({fx_node.target}), {_source(fx_node, self.origin)}: {msg}")

    def tensor(self, fx_node, arg) -> str:
        v = self.env.get(arg) if isinstance(arg, torch.fx.Node) else None
        if not (isinstance(v, tuple) and v[0] == "t"):
            raise self.err(fx_node, f"expected an activation tensor as input, got {arg!r}")
        return v[1]

    def param(self, fx_node, arg) -> np.ndarray | None:
        if arg is None:
            return None
        v = self.env.get(arg) if isinstance(arg, torch.fx.Node) else None
        if not (isinstance(v, tuple) and v[0] == "p"):
            raise self.err(fx_node, f"expected a constant weight tensor, got {arg!r}")
        return v[1]

    def emit(self, fx_node, op: str, inputs: list[str], attrs=None, weight=None, bias=None) -> str:
        out = fx_node.name
        node = Node(name=fx_node.name, op=op, inputs=inputs, output=out, attrs=attrs or {},
                    weight=weight, bias=bias, source=_source(fx_node, self.origin))
        self.nodes.append(node)
        self.producer[out] = node
        self.env[fx_node] = ("t", out)
        return out

    def alias(self, fx_node, tensor: str) -> None:
        self.env[fx_node] = ("t", tensor)

    def fusible(self, fx_node, tensor: str, ops: tuple[str, ...]) -> Node | None:
        """The producer of ``tensor`` if it is one of ``ops`` and fx_node's input has no other user."""
        prod = self.producer.get(tensor)
        src = fx_node.args[0]
        if prod is None or prod.op not in ops or prod.act != "none" or len(src.users) != 1:
            return None
        return prod

    # -- ops -----------------------------------------------------------------------------------
    def conv(self, n, x, w, b, stride, padding, dilation, groups):
        w = self.param(n, w)
        if w.ndim == 3:  # Conv1d on N x C x L: the 2-D convolution of a one-row image (kernel 1 x K)
            w = w[:, :, None, :]
            try:
                stride, dilation = _one(stride, 1), _one(dilation, 1)
                padding = padding if isinstance(padding, str) else (0, _one(padding, 0)[1])
            except ValueError as e:
                raise self.err(n, f"Conv1d with {e}") from None
        if w.ndim != 4:
            raise self.err(n, f"only 1-D and 2-D convolutions are supported (weight shape {w.shape})")
        if _pair(dilation, 1) != (1, 1):
            raise self.err(n, f"dilation {list(_pair(dilation, 1))} is not supported")
        if isinstance(padding, str):
            if padding == "valid":
                pads = (0, 0, 0, 0)
            elif padding == "same":
                kh, kw = w.shape[2:]
                if _pair(stride, 1) != (1, 1):
                    raise self.err(n, "padding='same' with stride > 1 is not supported")
                pads = ((kh - 1) // 2, (kw - 1) // 2, kh // 2, kw // 2)
            else:
                raise self.err(n, f"unsupported padding mode {padding!r}")
        else:
            ph, pw = _pair(padding, 0)
            pads = (ph, pw, ph, pw)
        bias = self.param(n, b)
        if bias is None:
            bias = np.zeros(w.shape[0], np.float32)
        attrs = {"stride": list(_pair(stride, 1)), "pads": list(pads), "groups": int(groups), "act": "none"}
        self.emit(n, "conv2d", [self.tensor(n, x)], attrs, w.astype(np.float32), bias.astype(np.float32))

    def conv_transpose(self, n, x, w, b, stride, padding, output_padding, groups, dilation):
        """ConvTranspose1d/2d as TRANSPOSE_CONV is imported (tflite_import._Reader.transpose_conv): a zero
        insertion (the input's pixels `stride` apart, k-1-padding around, output_padding more at the
        end), then a stride-1 conv2d with the kernel flipped and its in/out axes swapped."""
        from .. import moves

        w = self.param(n, w)
        shape = self.shape_of(n.args[0])
        one_d = w.ndim == 3
        if one_d:  # N x C x L: one row of pixels, a 1 x K kernel
            w, shape = w[:, :, None, :], (shape[0], 1, shape[1])
            try:
                stride, dilation = _one(stride, 1), _one(dilation, 1)
                padding, output_padding = (0, _one(padding, 0)[1]), (0, _one(output_padding, 0)[1])
            except ValueError as e:
                raise self.err(n, f"ConvTranspose1d with {e}") from None
        if w.ndim != 4 or len(shape) != 3:
            raise self.err(n, f"only 1-D and 2-D transposed convolutions are supported (weight shape {w.shape})")
        if int(groups) != 1 or _pair(dilation, 1) != (1, 1):
            raise self.err(n, f"transposed convolution with groups={groups}, dilation {list(_pair(dilation, 1))} "
                              "(only 1 and 1)")
        (sh, sw), (ph, pw), (oph, opw) = _pair(stride, 1), _pair(padding, 0), _pair(output_padding, 0)
        kh, kw = w.shape[2:]
        try:
            out_shape, move = moves.zero_insertion(shape, (sh, sw), (kh - 1 - ph, kw - 1 - pw, kh - 1 - ph + oph,
                                                                     kw - 1 - pw + opw))
        except moves.MoveError as e:
            raise self.err(n, f"transposed convolution of {shape[1]}x{shape[2]}: {e}") from None
        inserted = Node(name=f"{n.name}_inserted", op="copy", inputs=[self.tensor(n, x)], output=f"{n.name}_inserted",
                        attrs={"shape": out_shape, "moves": [move], "fill": True}, source=_source(n, self.origin))
        self.nodes.append(inserted)
        self.producer[inserted.output] = inserted
        flipped = np.ascontiguousarray(w[:, :, ::-1, ::-1].transpose(1, 0, 2, 3))  # (in, out) -> (out, in)
        bias = self.param(n, b)
        bias = np.zeros(flipped.shape[0], np.float32) if bias is None else bias
        out = self.emit(n, "conv2d", [inserted.output], {"stride": [1, 1], "pads": [0, 0, 0, 0], "groups": 1,
                                                         "act": "none"}, flipped.astype(np.float32),
                        bias.astype(np.float32))
        return out

    def lstm(self, n, x, hx, params, has_biases, num_layers, dropout, train, bidirectional, batch_first):
        """nn.LSTM (batch_first, one direction, any layers, from the zero state) as TFLite's LSTM: the IR's
        lstm node per layer (gates i, f, g, o: TFLite's input, forget, cell, output), quantized to
        TFLite Micro's int8 LSTM (quant/stateful.py). Its output sequence (N, T, H) is the IR's H x 1 x T,
        whose bytes are the same: only another LSTM, one step or unit (select) or the model output
        may read it (sequences)."""
        from .. import moves

        if bidirectional or not batch_first:
            raise self.err(n, f"LSTM with bidirectional={bidirectional}, batch_first={batch_first} (one direction, "
                              "batch_first=True only)")
        for h in hx:
            if self.env.get(h) != ("zeros",):
                raise self.err(n, "an LSTM's initial state must be zeros (every inference starts from the reset state)")
        per = 4 if has_biases else 2
        if len(params) != per * num_layers:
            raise self.err(n, f"{len(params)} LSTM parameters for {num_layers} layers (projections are not supported)")
        src = self.tensor(n, x)
        if src not in self.sequences:  # the model's N x T x F input, read as N x C x L: IR T x 1 x F -> F x 1 x T
            if self.producer.get(src) is not None or src != x.name:
                raise self.err(n, "an LSTM reads the model input or another LSTM's output only")
            steps, feats = self.shape_of(x)
            index = np.arange(steps * feats, dtype=np.int64).reshape(feats, steps)  # T x 1 x F's bytes: t + T * f
            move = moves.affine_move(index.T.copy(), np.arange(steps * feats, dtype=np.int64).reshape(steps, feats))
            node = Node(name=f"{n.name}_steps", op="copy", inputs=[src], output=f"{n.name}_steps",
                        attrs={"shape": [feats, 1, steps], "moves": [move]}, source=_source(n, self.origin))
            self.nodes.append(node)
            self.producer[node.output] = node
            src = node.output
        for layer in range(num_layers):
            w_ih, w_hh, *b = [self.param(n, p) for p in params[per * layer:per * (layer + 1)]]
            units = w_hh.shape[1]
            weight = np.concatenate([w_ih.reshape(4, units, -1), w_hh.reshape(4, units, units)], axis=2)
            bias = (b[0] + b[1]).reshape(4, units) if b else np.zeros((4, units), np.float32)
            name = n.name if layer == num_layers - 1 else f"{n.name}_layer{layer}"
            node = Node(name=name, op="lstm", inputs=[src], output=name, attrs={"cell_clip": 0.0, "cell_act": "tanh"},
                        weight=weight.astype(np.float32), bias=bias.astype(np.float32), source=_source(n, self.origin))
            self.nodes.append(node)
            self.producer[name] = node
            self.sequences.add(name)
            src = name
        self.env[n] = [("t", src), ("lstm_state",), ("lstm_state",)]

    def select_step(self, n, x, dim, index):
        """x[:, i] or x[:, :, j] of an LSTM's output sequence (N x T x H, the same bytes as the IR's H x 1 x T):
        one strided byte move to a vector."""
        from .. import moves

        t = self.tensor(n, x)
        steps, units = self.shape_of(x)
        pos = np.arange(steps * units, dtype=np.int64).reshape(steps, units)
        if dim not in (1, 2, -1, -2):
            raise self.err(n, f"select along dimension {dim} of an LSTM's output")
        taken = np.take(pos, index, axis=0 if dim in (1, -2) else 1)
        move = moves.affine_move(taken, np.arange(taken.size, dtype=np.int64))
        self.emit(n, "copy", [t], {"shape": [int(taken.size)], "moves": [move]})

    def linear(self, n, x, w, b):
        w = self.param(n, w)
        bias = self.param(n, b)
        if bias is None:
            bias = np.zeros(w.shape[0], np.float32)
        self.emit(n, "linear", [self.tensor(n, x)], {"act": "none"}, w.astype(np.float32), bias.astype(np.float32))

    def batchnorm(self, n, x, gamma, beta, mean, var, eps):
        t = self.tensor(n, x)
        prod = self.fusible(n, t, ("conv2d", "linear"))
        if prod is None:
            raise self.err(n, "BatchNorm must directly follow a Conv2d or Linear (with no other user) to be folded")
        mean, var = self.param(n, mean), self.param(n, var)
        gamma = self.param(n, gamma)
        beta = self.param(n, beta)
        c = mean.shape[0]
        gamma = np.ones(c) if gamma is None else gamma.astype(np.float64)
        beta = np.zeros(c) if beta is None else beta.astype(np.float64)
        scale = gamma / np.sqrt(var.astype(np.float64) + float(eps))
        w = prod.weight.astype(np.float64)
        prod.weight = (w * scale.reshape((-1,) + (1,) * (w.ndim - 1))).astype(np.float32)
        prod.bias = ((prod.bias - mean) * scale + beta).astype(np.float32)
        self.alias(n, t)

    def activation(self, n, x, kind: str):
        t = self.tensor(n, x)
        prod = self.fusible(n, t, ("conv2d", "linear", "add"))
        if prod is not None:
            prod.attrs["act"] = kind
            self.alias(n, t)
        else:
            self.emit(n, kind, [t])

    def pool(self, n, op, x, kernel, stride, padding, ceil_mode, extra_ok=True):
        if ceil_mode:
            raise self.err(n, "ceil_mode=True is not supported")
        if not extra_ok:
            raise self.err(n, "count_include_pad=False / divisor_override are not supported")
        kh, kw = _pair(kernel)
        sh, sw = _pair(stride, (kh, kw))
        ph, pw = _pair(padding, 0)
        attrs = {"kernel": [kh, kw], "stride": [sh, sw], "pads": [ph, pw, ph, pw]}
        self.emit(n, op, [self.tensor(n, x)], attrs)

    def upsample_nearest(self, n, x):
        """F.interpolate(mode='nearest') / nn.Upsample: each output pixel a copy of one input pixel, a
        byte move (moves.py) when the factors make strided positions (integer factors do)."""
        from .. import moves

        c, h, w = self.shape_of(n.args[0])
        _, oh, ow = self.shape_of(n)
        index = np.arange(h * w * c, dtype=np.int64).reshape(1, h, w, c)
        ys, xs = moves.nearest_rows(oh, h), moves.nearest_rows(ow, w)
        src, dst = moves.repeats_split(index[:, ys][:, :, xs], np.arange(oh * ow * c, dtype=np.int64).reshape(1, oh, ow, c),
                                       [ys, xs])
        try:
            move = moves.affine_move(src, dst)
        except moves.MoveError as e:
            raise self.err(n, f"nearest resize {h}x{w} -> {oh}x{ow}: {e} (integer scale factors are supported)") from None
        self.emit(n, "copy", [self.tensor(n, x)], {"shape": [c, oh, ow], "moves": [move]})

    def reshape(self, n, x, shape_out):
        t = self.tensor(n, x)
        if len(shape_out) == 2:
            self.emit(n, "flatten", [t])
        elif tuple(shape_out[1:]) == tuple(self.shape_of(n.args[0])):
            self.alias(n, t)
        else:
            raise self.err(n, f"reshape to {list(shape_out)} is not supported (only flattening to N×F)")

    def shape_of(self, fx_node) -> tuple[int, ...]:
        return tuple(fx_node.meta["val"].shape[1:])

    def call(self, n) -> None:
        t, a, kw = n.target, list(n.args), dict(n.kwargs)

        def arg(i, key, default=None):
            return a[i] if len(a) > i else kw.get(key, default)

        if t is operator.getitem:
            src = self.env.get(a[0])
            if isinstance(src, list):
                self.env[n] = src[a[1]]
                return
            if a[1] == 0 and isinstance(src, tuple) and src[0] == "t":
                self.env[n] = src
                return
            if a[1] != 0:
                self.env[n] = None  # unused secondary outputs (BN statistics, pool indices)
                return
            raise self.err(n, "unsupported tuple access")
        seq = [v for v in n.all_input_nodes if isinstance(self.env.get(v), tuple)  # lists too (torch.cat)
               and self.env[v][0] == "t" and self.env[v][1] in self.sequences]
        if seq and t not in (aten.lstm.input, aten.select.int):
            raise self.err(n, "an LSTM's output sequence can feed another LSTM, one step or unit (x[:, i]) or the "
                              "model output only")
        if t is not operator.getitem and any(self.env.get(v) == ("lstm_state",) for v in n.all_input_nodes):
            raise self.err(n, "an LSTM's final states (h_n, c_n) are not supported; the last hidden state is the "
                              "output's last step: y[:, -1]")
        if t is aten.zeros.default:  # an LSTM's initial state (checked there)
            self.env[n] = ("zeros",)
        elif t is aten.lstm.input:
            self.lstm(n, *a[:9])
        elif t is aten.select.int and seq:
            self.select_step(n, a[0], a[1], a[2])
        elif t in (aten.conv2d.default, aten.conv2d.padding):
            self.conv(n, arg(0, "input"), arg(1, "weight"), arg(2, "bias"), arg(3, "stride", 1),
                      arg(4, "padding", 0), arg(5, "dilation", 1), arg(6, "groups", 1))
        elif t is aten.convolution.default:
            if a[6]:
                self.conv_transpose(n, a[0], a[1], a[2], a[3], a[4], a[7], a[8], a[5])
            else:
                self.conv(n, a[0], a[1], a[2], a[3], a[4], a[5], a[8])
        elif t in (aten.conv_transpose2d.input, aten.conv_transpose1d.default):
            self.conv_transpose(n, arg(0, "input"), arg(1, "weight"), arg(2, "bias"), arg(3, "stride", 1),
                                arg(4, "padding", 0), arg(5, "output_padding", 0), arg(6, "groups", 1),
                                arg(7, "dilation", 1))
        elif t in (aten.conv1d.default, aten.conv1d.padding):
            self.conv(n, arg(0, "input"), arg(1, "weight"), arg(2, "bias"), arg(3, "stride", 1),
                      arg(4, "padding", 0), arg(5, "dilation", 1), arg(6, "groups", 1))
        elif t in (aten.max_pool1d.default, aten.max_pool1d_with_indices.default):
            if _one(arg(4, "dilation", 1), 1) != (1, 1):
                raise self.err(n, "max pooling with dilation is not supported")
            k = _one(a[1], None)
            self.pool(n, "maxpool2d", a[0], k, _one(arg(2, "stride"), k[1]), (0, _one(arg(3, "padding", 0), 0)[1]),
                      arg(5, "ceil_mode", False))
            if t is aten.max_pool1d_with_indices.default:
                self.env[n] = [self.env[n], None]
        elif t is aten.avg_pool1d.default:
            k = _one(a[1], None)
            pad = _one(arg(3, "padding", 0), 0)
            self.pool(n, "avgpool2d", a[0], k, _one(arg(2, "stride"), k[1]), (0, pad[1]), arg(4, "ceil_mode", False),
                      bool(arg(5, "count_include_pad", True)) or not pad[1])
        elif t is aten.adaptive_avg_pool1d.default:
            if _one(a[1], None) != (1, 1):
                raise self.err(n, f"adaptive average pooling to {list(a[1])} is not supported (only 1)")
            self.emit(n, "global_avgpool", [self.tensor(n, a[0])])
        elif t in (aten.upsample_nearest2d.vec, aten.upsample_nearest2d.default):
            self.upsample_nearest(n, a[0])
        elif t is aten.linear.default:
            self.linear(n, a[0], a[1], arg(2, "bias"))
        elif t is aten.permute.default and isinstance(self.env.get(a[0]), tuple) and self.env[a[0]][0] == "p":
            self.env[n] = ("p", np.transpose(self.env[a[0]][1], a[1]))
        elif t in (aten.t.default, aten.numpy_T.default) and self.env.get(a[0], (None,))[0] == "p":
            self.env[n] = ("p", self.env[a[0]][1].T)
        elif t is aten.addmm.default:
            # decomposed Linear: addmm(bias, x, weight.T)
            weight_t = self.param(n, a[2])
            bias = self.param(n, a[0])
            self.emit(n, "linear", [self.tensor(n, a[1])], {"act": "none"},
                      np.ascontiguousarray(weight_t.T, np.float32), bias.astype(np.float32))
        elif t is aten.batch_norm.default:
            if arg(5, "training", False):
                raise self.err(n, "BatchNorm in training mode; call model.eval() before export")
            self.batchnorm(n, a[0], a[1], a[2], a[3], a[4], arg(7, "eps", 1e-5))
        elif t is aten._native_batch_norm_legit_no_training.default:
            self.batchnorm(n, a[0], a[1], a[2], a[3], a[4], arg(6, "eps", 1e-5))
            self.env[n] = [self.env[n], None, None]
        elif t in (aten.relu.default, aten.relu_.default):
            self.activation(n, a[0], "relu")
        elif t in TABLE_OPS:
            self.emit(n, TABLE_OPS[t], [self.tensor(n, a[0])])
        elif t is aten.cat.default:
            rank = len(n.meta["val"].shape)
            if arg(1, "dim", 0) % rank != 1:
                raise self.err(n, f"torch.cat along dim {arg(1, 'dim', 0)} is not supported (only the channels, dim=1)")
            self.emit(n, "concat", [self.tensor(n, v) for v in a[0]])
        elif t in (aten.leaky_relu.default, aten.leaky_relu_.default):
            self.emit(n, "leaky_relu", [self.tensor(n, a[0])], {"alpha": float(arg(1, "negative_slope", 0.01))})
        elif t in (aten.hardtanh.default, aten.hardtanh_.default, aten.clamp.default):
            lo, hi = arg(1, "min_val", -1.0), arg(2, "max_val", 1.0)
            if (float(lo), float(hi)) != (0.0, 6.0):
                raise self.err(n, f"clamp/hardtanh to [{lo}, {hi}] is not supported (only ReLU6 = [0, 6])")
            self.activation(n, a[0], "relu6")
        elif t in (aten.max_pool2d.default, aten.max_pool2d_with_indices.default):
            if _pair(arg(4, "dilation", 1), 1) != (1, 1):
                raise self.err(n, "max pooling with dilation is not supported")
            self.pool(n, "maxpool2d", a[0], a[1], arg(2, "stride"), arg(3, "padding", 0), arg(5, "ceil_mode", False))
            if t is aten.max_pool2d_with_indices.default:
                self.env[n] = [self.env[n], None]
        elif t is aten.avg_pool2d.default:
            extra_ok = arg(5, "count_include_pad", True) and arg(6, "divisor_override") is None
            if not any(_pair(arg(3, "padding", 0), 0)):
                extra_ok = arg(6, "divisor_override") is None
            self.pool(n, "avgpool2d", a[0], a[1], arg(2, "stride"), arg(3, "padding", 0), arg(4, "ceil_mode", False), extra_ok)
        elif t in (aten.adaptive_avg_pool2d.default, aten._adaptive_avg_pool2d.default):
            if _pair(a[1]) != (1, 1):
                raise self.err(n, f"adaptive average pooling to {list(a[1])} is not supported (only 1×1)")
            self.emit(n, "global_avgpool", [self.tensor(n, a[0])])
        elif t is aten.mean.dim:
            rank = len(n.args[0].meta["val"].shape)
            dims = sorted(d % rank for d in a[1])
            if dims != ([2, 3] if rank == 4 else [2]):
                raise self.err(n, f"mean over dims {list(a[1])} is not supported (only spatial H, W)")
            out = self.emit(n, "global_avgpool", [self.tensor(n, a[0])])
            if not arg(2, "keepdim", False):
                node = Node(name=n.name + "_flat", op="flatten", inputs=[out], output=n.name + "_flat",
                            source=_source(n, self.origin))
                self.nodes.append(node)
                self.producer[node.output] = node
                self.alias(n, node.output)
        elif t in (aten.add.Tensor, aten.add_.Tensor):
            if arg(2, "alpha", 1) != 1:
                raise self.err(n, "add with alpha != 1 is not supported")
            if not all(isinstance(v, torch.fx.Node) for v in a[:2]):
                raise self.err(n, "adding a constant is not supported (only residual tensor + tensor)")
            self.emit(n, "add", [self.tensor(n, a[0]), self.tensor(n, a[1])], {"act": "none"})
        elif t in (aten.mul.Tensor, aten.mul_.Tensor):
            if not all(isinstance(v, torch.fx.Node) for v in a[:2]):
                raise self.err(n, "multiplying by a constant is not supported (only tensor x tensor)")
            self.emit(n, "mul", [self.tensor(n, a[0]), self.tensor(n, a[1])], {"act": "none"})
        elif t is aten.flatten.using_ints:
            start = arg(1, "start_dim", 0)
            end = arg(2, "end_dim", -1)
            if start != 1 or end not in (-1, len(n.args[0].meta["val"].shape) - 1):
                raise self.err(n, f"flatten(start_dim={start}, end_dim={end}) is not supported (only start_dim=1)")
            self.emit(n, "flatten", [self.tensor(n, a[0])])
        elif t in (aten.view.default, aten.reshape.default, aten._unsafe_view.default):
            self.reshape(n, a[0], list(n.meta["val"].shape))
        elif t in (aten.softmax.int, aten._softmax.default):
            dim = a[1] % len(n.meta["val"].shape)
            if dim != len(n.meta["val"].shape) - 1:
                raise self.err(n, "softmax is only supported over the last dimension")
            self.softmax_tensor = self.tensor(n, a[0])
            self.env[n] = ("softmax", self.softmax_tensor)
        elif t in (aten.dropout.default, aten.clone.default, aten.contiguous.default, aten.alias.default,
                   aten.detach.default, aten.feature_dropout.default):
            self.alias(n, self.tensor(n, a[0]))
        else:
            raise self.err(n, f"unsupported op {t}" + (f": {WHY_NOT[str(t)]}" if str(t) in WHY_NOT else ""))

    def check_supported(self) -> None:
        """One refusal naming every unsupported op in the program, not only the first one met."""
        missing: dict[str, list[str]] = {}
        for n in self.ep.graph.nodes:
            if n.op == "call_function" and n.target is not operator.getitem and n.target not in SUPPORTED_TARGETS \
                    and n.target not in TABLE_OPS:
                missing.setdefault(str(n.target), []).append(_source(n, self.origin))
        if len(missing) > 1:
            raise NupesError(f"{self.origin}: unsupported ops: " + "; ".join(
                f"{t} ({where[0]}{f' and {len(where) - 1} more' if len(where) > 1 else ''})"
                + (f": {WHY_NOT[t]}" if t in WHY_NOT else "") for t, where in missing.items()))

    def run(self) -> Graph:
        self.check_supported()
        ep = self.ep
        sig = ep.graph_signature
        state = ep.state_dict
        consts = getattr(ep, "constants", {}) or {}
        params = {**sig.inputs_to_parameters, **sig.inputs_to_buffers}
        lifted = getattr(sig, "inputs_to_lifted_tensor_constants", {}) or {}
        user_inputs = []
        for n in ep.graph.nodes:
            if n.op == "placeholder":
                if n.name in params:
                    src = params[n.name]
                    v = state[src] if src in state else consts[src]
                    self.env[n] = ("p", v.detach().float().numpy().copy())
                elif n.name in lifted:
                    self.env[n] = ("p", consts[lifted[n.name]].detach().float().numpy().copy())
                else:
                    user_inputs.append(n)
                    self.env[n] = ("t", n.name)
            elif n.op == "call_function":
                if self.softmax_tensor is not None and n.target is not operator.getitem:
                    raise self.err(n, "Softmax is only supported as the final op")
                self.call(n)
            elif n.op == "output":
                outs = n.args[0]
                outs = list(outs) if isinstance(outs, (list, tuple)) else [outs]
                if len(outs) != 1:
                    raise NupesError(f"{self.origin}: the model has {len(outs)} outputs; only one is supported")
                out = self.env.get(outs[0])
                if not isinstance(out, tuple) or out[0] not in ("t", "softmax"):
                    raise NupesError(f"{self.origin}: the model output is not a tensor computed by supported ops")
                output_name = out[1]
            else:
                raise self.err(n, f"unsupported graph node kind '{n.op}'")
        if len(user_inputs) != 1:
            raise NupesError(f"{self.origin}: the model takes {len(user_inputs)} inputs; only one is supported")
        inp = user_inputs[0]
        shape = tuple(inp.meta["val"].shape)
        if len(shape) not in (2, 3, 4):
            raise NupesError(f"{self.origin}: input shape {list(shape)} is not N×C×H×W, N×C×L or N×F")
        if len(shape) == 3:  # N x C x L (Conv1d): one row of L pixels of C channels
            shape = (shape[0], shape[1], 1, shape[2])
        graph = Graph(input_name=inp.name, input_shape=shape[1:], output_name=output_name,
                      nodes=self.nodes, output_softmax=self.softmax_tensor is not None)
        if not graph.nodes:
            raise NupesError(f"{self.origin}: the model has no supported layers")
        infer_shapes(graph)
        self.check_shapes(graph)
        return graph

    def check_shapes(self, graph: Graph) -> None:
        """Our shape inference must agree with torch's for every tensor it produced."""
        for n in self.ep.graph.nodes:
            v = self.env.get(n)
            if isinstance(v, tuple) and v[0] == "t" and v[1] in graph.shapes and "val" in n.meta:
                want = tuple(n.meta["val"].shape[1:])
                got = graph.shapes[v[1]]
                if int(np.prod(want)) != int(np.prod(got)) or (len(want) == len(got) and want != got):
                    raise self.err(n, f"shape check failed: torch says {list(want)}, IR says {list(got)}")


def import_exported(ep, origin: str = "model") -> Graph:
    """Import a ``torch.export.ExportedProgram``."""
    return _Importer(ep, origin).run()
