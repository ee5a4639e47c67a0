"""Data-driven weight quantization by layer-output reconstruction: AdaRound and NUPES.

Layers are quantized one at a time in execution order. Each layer sees the input produced by the
model whose earlier layers are already quantized (activations fake-quantized to int8), and is
fitted to the float model's output of the same layer (after its fused activation), so later
layers correct the error of earlier ones.

AdaRound (baseline): uniform grid (a = 1, MSE-clipped alpha); learns only floor-or-ceil per
weight with the rectified sigmoid and the annealed rounding regularizer.

NUPES: the power grid of PowerQuant (a from its search, alpha MSE-clipped for that a), and
three learned things:
  * a continuous code t per weight, free over the whole grid [-Qmax, Qmax] (not only floor/ceil),
    pulled to integers by the same annealed regularizer applied to frac(t); final q = round(t);
  * the layer exponent a, by gradient through the decode w = alpha·sign(t)·(|t|/Qmax)^(1/a);
  * the per-channel scale alpha (in log space), and the layer's float bias (which absorbs the
    mean shift that rounding causes, as bias correction does for the data-free methods).
The gradient d/da of x^(1/a) is -x^(1/a)·ln(x)/a², which blows up where x → 0. We work in the
normalized domain x = |t|/Qmax ∈ [X_EPS, 1] (clamped), so |x^(1/a)·ln x| ≤ a/e stays bounded,
exact zeros (t = 0) contribute no gradient to a, and a is clamped to [A_LO, A_HI] after each step.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from .. import torch_exec
from ..ir import Graph, Node
from ..progress import bar as progress_bar
from . import powerquant
from .calibrate import act_q_torch
from .power import channel_view, decode, qmax
from .types import ActQuant, LayerWeights
from .uniform import mse_alpha

ZETA, GAMMA = 1.1, -0.1  # rectified sigmoid stretch (AdaRound)
X_EPS = 1e-6
A_LO, A_HI = 0.2, 2.0


@dataclass
class ReconConfig:
    iters: int = 800
    batch: int = 64
    warmup: float = 0.2  # fraction of iterations without the rounding regularizer
    reg_weight: float = 0.1
    beta: tuple[float, float] = (20.0, 2.0)
    lr_round: float = 1e-2  # AdaRound V / NUPES codes t
    lr_a: float = 1e-3
    lr_alpha: float = 1e-3
    lr_bias: float = 1e-3
    seed: int = 0


def _beta(cfg: ReconConfig, step: int) -> float | None:
    start = int(cfg.warmup * cfg.iters)
    if step < start:
        return None
    frac = (step - start) / max(1, cfg.iters - start)
    b0, b1 = cfg.beta
    return b1 + 0.5 * (b0 - b1) * (1 + math.cos(math.pi * frac))


def _round_reg(h: torch.Tensor, beta: float) -> torch.Tensor:
    """0 when every h is 0 or 1, largest at 1/2 (AdaRound's regularizer, averaged)."""
    return (1 - (2 * h - 1).abs().pow(beta)).mean()


class _AdaRound:
    def __init__(self, w: torch.Tensor, b: torch.Tensor, bits: int):
        self.b = b
        self.q = qmax(bits)
        self.alpha = torch.from_numpy(mse_alpha(w.numpy(), bits))
        self.s = channel_view(self.alpha.numpy() / self.q, w.ndim)
        self.s = torch.from_numpy(self.s)
        ws = w.double() / self.s
        self.floor = torch.floor(ws)
        rest = (ws - self.floor).clamp(0.01, 0.99)
        self.v = torch.nn.Parameter(-torch.log((ZETA - GAMMA) / (rest - GAMMA) - 1))
        self.bits = bits

    def groups(self, cfg):
        return [{"params": [self.v], "lr": cfg.lr_round}]

    def h(self):
        return torch.clamp(torch.sigmoid(self.v) * (ZETA - GAMMA) + GAMMA, 0, 1)

    def weight(self):
        return (self.s * torch.clamp(self.floor + self.h(), -self.q, self.q)).float()

    def reg(self, beta):
        return _round_reg(self.h(), beta)

    def bias(self):
        return self.b

    def after_step(self):
        pass

    def result(self) -> LayerWeights:
        codes = torch.clamp(self.floor + (self.v >= 0).double(), -self.q, self.q)
        return LayerWeights(self.bits, 1.0, self.alpha.numpy().copy(), codes.numpy().astype(np.int8))


class _Nupes:
    def __init__(self, w: torch.Tensor, b: torch.Tensor, bits: int):
        self.b = torch.nn.Parameter(b.double().clone())
        self.q = qmax(bits)
        self.bits = bits
        init = powerquant.quantize(w.numpy(), bits)
        init.alpha = mse_alpha(w.numpy(), bits, init.a)  # clipped scale: far better start at 2-3 bits
        w64 = w.double()
        alpha = torch.from_numpy(init.alpha)
        u = (w64.abs() / torch.from_numpy(channel_view(init.alpha, w.ndim))).clamp(max=1.0)
        self.t = torch.nn.Parameter(torch.sign(w64) * self.q * u.pow(init.a))
        self.a = torch.nn.Parameter(torch.tensor(float(init.a), dtype=torch.float64))
        self.log_alpha = torch.nn.Parameter(torch.log(alpha))
        self.ndim = w.ndim

    def groups(self, cfg):
        return [{"params": [self.t], "lr": cfg.lr_round}, {"params": [self.a], "lr": cfg.lr_a},
                {"params": [self.log_alpha], "lr": cfg.lr_alpha}, {"params": [self.b], "lr": cfg.lr_bias}]

    def bias(self):
        return self.b.float()

    def weight(self):
        x = (self.t.abs() / self.q).clamp(X_EPS, 1.0)
        alpha = torch.exp(self.log_alpha).reshape((-1,) + (1,) * (self.ndim - 1))
        return (alpha * torch.sign(self.t) * x.pow(1.0 / self.a)).float()

    def reg(self, beta):
        return _round_reg(self.t - torch.floor(self.t), beta)

    def after_step(self):
        with torch.no_grad():
            self.t.clamp_(-self.q, self.q)
            self.a.clamp_(A_LO, A_HI)

    def result(self) -> LayerWeights:
        with torch.no_grad():
            t = self.t.numpy()
            codes = np.clip(np.sign(t) * np.floor(np.abs(t) + 0.5), -self.q, self.q).astype(np.int8)
            return LayerWeights(self.bits, float(self.a), torch.exp(self.log_alpha).numpy().copy(), codes,
                                self.b.numpy().copy())


_LEARNERS = {"adaround": _AdaRound, "nupes": _Nupes}


def _fit_layer(node: Node, learner, x: torch.Tensor, y: torch.Tensor, cfg: ReconConfig) -> None:
    opt = torch.optim.Adam(learner.groups(cfg))
    gen = torch.Generator().manual_seed(cfg.seed)
    y_power = float((y ** 2).mean()) + 1e-12
    for step in range(cfg.iters):
        idx = torch.randint(0, len(x), (min(cfg.batch, len(x)),), generator=gen)
        out = torch_exec.layer_forward(node, x[idx], learner.weight(), learner.bias())
        loss = ((out - y[idx]) ** 2).mean() / y_power
        beta = _beta(cfg, step)
        if beta is not None:
            loss = loss + cfg.reg_weight * learner.reg(beta)
        opt.zero_grad()
        loss.backward()
        opt.step()
        learner.after_step()


def fit_layer(node: Node, x: torch.Tensor, y: torch.Tensor, bits: int, method: str, cfg: ReconConfig) -> LayerWeights:
    """Quantize one layer at ``bits`` so that its output on ``x`` reconstructs ``y``."""
    learner = _LEARNERS[method](torch.from_numpy(node.weight), torch.from_numpy(node.bias), bits)
    _fit_layer(node, learner, x, y, cfg)
    return learner.result()


def quantize(graph: Graph, x_calib: np.ndarray, act: dict[str, ActQuant], bits_of: dict[str, int],
             method: str, cfg: ReconConfig | None = None, progress: bool = False) -> dict[str, LayerWeights]:
    """Quantize every weight layer of ``graph`` by output reconstruction on ``x_calib``."""
    cfg = cfg or ReconConfig()
    torch.manual_seed(cfg.seed)
    aq = act_q_torch(act)
    xin = torch.from_numpy(np.ascontiguousarray(x_calib, np.float32))
    done: dict[str, LayerWeights] = {}
    done_t: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    layers = graph.weight_nodes()
    bar = progress_bar(layers, desc=f"{method} reconstruction", unit="layer", enabled=progress)
    for node in bar:
        with torch.no_grad():
            x = torch_exec.quantized_input(graph, xin, node, done_t, aq)
            y = torch_exec.run(graph, xin, stop_after=node.output)
        lw = fit_layer(node, x, y, bits_of[node.name], method, cfg)
        done[node.name] = lw
        bias = node.bias if lw.bias is None else lw.bias.astype(np.float32)
        done_t[node.name] = (torch.from_numpy(decode(lw.codes, lw.alpha, lw.a, lw.bits).astype(np.float32)),
                             torch.from_numpy(bias))
    return done
