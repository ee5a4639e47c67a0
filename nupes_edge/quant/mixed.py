"""Mixed precision under a flash budget: the weight bits of each layer, chosen so the model fits.

1. Cost: the flash bytes of every layer at every width, by codegen's own storage rules
   (``layer_flash_bytes``), known from the shapes before anything is quantized.
2. Sensitivity: for each layer and width, only that layer is quantized with the chosen method (the
   reconstruction methods fit it on calibration data, with fewer iterations than the final pass)
   and the model's output error is measured on calibration data, ||y - y_float||² / ||y_float||².
3. Allocation: the sum of sensitivities is minimized subject to the sum of costs fitting the
   budget, exactly, by a dynamic program over layers and bytes. Summing assumes the layers'
   quantization noises add in power, which holds to first order for independent noise (HAWQ's
   assumption too).
4. The final pass quantizes the model with the chosen bits, exactly as ``--layer-wbits`` would.
"""
from __future__ import annotations

import re
import sys
import time
from dataclasses import dataclass

import numpy as np
import torch

from .. import torch_exec
from ..codegen.plan import ADD_TABLE_BYTES, layer_flash_bytes
from ..errors import NupesError
from ..ir import Graph, Node
from ..progress import bar as progress_bar
from . import powerquant, reconstruct, uniform
from .power import decode

BITS = tuple(range(2, 9))
SENSITIVITY_SAMPLES = 256  # calibration inputs the sensitivities are measured on
SENSITIVITY_ITERS = 8  # a reconstruction method's iterations per layer, as a fraction 1/N of the final pass's
_UNITS = {"": 1, "b": 1, "k": 1024, "kb": 1024, "kib": 1024, "m": 1024 ** 2, "mb": 1024 ** 2, "mib": 1024 ** 2}


def parse_size(text: str) -> int:
    """'24576', '24K', '24 KB', '24KiB', '1.5M' → bytes (K, KB and KiB all mean 1,024 bytes, as flash
    sizes are quoted in datasheets)."""
    m = re.fullmatch(r"\s*(\d{1,12}(?:\.\d{1,6})?)\s*([a-zA-Z]*)\s*", str(text)[:64])
    if not m or m.group(2).lower() not in _UNITS:
        raise ValueError(f"a size in bytes, optionally with K/KB/KiB or M/MB/MiB (1 K = 1,024 B), got {str(text)[:40]!r}")
    size = int(float(m.group(1)) * _UNITS[m.group(2).lower()])
    if size <= 0:
        raise ValueError(f"a flash budget must be positive, got {text!r}")
    if size > 1 << 32:
        raise ValueError(f"a flash budget of {size:,} B is beyond any microcontroller (at most 4 GiB)")
    return size


def layer_options(graph: Graph, pins: dict[str, int]) -> dict[str, tuple[int, ...]]:
    """The widths each weight layer may take: its pinned width, or 2..8."""
    return {n.name: (int(pins[n.name]),) if n.name in pins else BITS for n in graph.weight_nodes()}


def flash_costs(graph: Graph, method: str, options: dict[str, tuple[int, ...]]) -> dict[str, dict[int, int]]:
    """Bytes of each layer at each allowed width. Exact, except that an 8-bit convolution of a
    uniform method may turn out to need no table (then the model is 512 B smaller than counted)."""
    costs = {}
    for n in graph.weight_nodes():
        # uniform 8-bit dense layers always get the int8 kernel, which stores no table
        free = n.op == "linear" and method in ("uniform", "uniform-mse", "adaround")
        costs[n.name] = {b: layer_flash_bytes(n.op, n.weight.shape, b, table_free=free and b == 8)
                         for b in options[n.name]}
    return costs


def add_options(graph: Graph) -> dict[tuple, dict[int, int]]:
    """Each add as a choice too: its two rescaling tables (1, 2 KB, the fast kernel) or none (0: the
    kernel computes the rescaling, the same result, about 2.5x its instructions)."""
    return {("add", n.name): {0: 0, 1: ADD_TABLE_BYTES} for n in graph.nodes if n.op == "add"}


def stateful_flash_bytes(graph: Graph) -> int:
    """Flash of the LSTMs and SVDFs, whatever the bits (their weights are stored one byte each, the SVDF's
    time weights two; quant/stateful.py): int8 weights and int32 biases (an LSTM's input and recurrent
    ones, an SVDF's folded feature sums and bias), as codegen/plan.py counts them, the SVDF's time
    weights all counted (an upper bound when a reset-state SVDF keeps only the newest)."""
    total = 0
    for n in graph.nodes:
        if n.op == "lstm":  # weight (4, S, F + S)
            total += n.weight.size + 4 * 2 * n.bias.size
        elif n.op == "svdf":  # weight (filters, I + M), bias (units,)
            filters, inputs = n.weight.shape[0], graph.shapes[n.inputs[0]][0]
            total += filters * inputs + 2 * filters * (n.weight.shape[1] - inputs) + 4 * filters + 4 * n.bias.size
    return int(total)


def size_range(graph: Graph, costs: dict[str, dict[int, int]]) -> tuple[int, int]:
    """(smallest, largest) model flash any allocation gives: every free layer at 2 bits and no add
    tables, or every free layer at 8 bits with them (the LSTMs and SVDFs, fixed, in both)."""
    every = {**costs, **add_options(graph)}
    fixed = stateful_flash_bytes(graph)
    return (fixed + sum(min(c.values()) for c in every.values()),
            fixed + sum(max(c.values()) for c in every.values()))


def _quantize_alone(node: Node, x: torch.Tensor, bits: int, method: str,
                    cfg: reconstruct.ReconConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """One layer quantized at ``bits`` by ``method`` on its float input x: (weight, bias) to run."""
    w = torch.from_numpy(node.weight)
    if method in ("adaround", "nupes"):
        with torch.no_grad():
            y = torch_exec.layer_forward(node, x, w, torch.from_numpy(node.bias))
        lw = reconstruct.fit_layer(node, x, y, bits, method, cfg)
    else:
        fn = {"uniform": uniform.quantize_minmax, "uniform-mse": uniform.quantize_mse,
              "powerquant": powerquant.quantize}[method]
        lw = fn(node.weight, bits)
    wq = torch.from_numpy(decode(lw.codes, lw.alpha, lw.a, lw.bits).astype(np.float32))
    bias = torch.from_numpy(np.asarray(node.bias if lw.bias is None else lw.bias, np.float32))
    if method not in ("adaround", "nupes"):
        bias = bias - _mean_shift(node, x, wq - w)  # the final pass's bias correction, for this layer
    return wq, bias


def _mean_shift(node: Node, x: torch.Tensor, dw: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        if node.op == "conv2d":
            return torch_exec.conv2d(node, x, dw, None).mean(dim=(0, 2, 3))
        return torch.nn.functional.linear(x, dw).mean(dim=0)


def sensitivities(graph: Graph, x_calib: np.ndarray, method: str, options: dict[str, tuple[int, ...]],
                  cfg: reconstruct.ReconConfig | None = None, progress: bool = False) -> dict[str, dict[int, float]]:
    """Output error (||y - y_float||² / ||y_float||² on calibration data) with one layer quantized."""
    cfg = cfg or reconstruct.ReconConfig()
    cfg = reconstruct.ReconConfig(**{**cfg.__dict__, "iters": max(50, cfg.iters // SENSITIVITY_ITERS)})
    pick = np.random.default_rng(cfg.seed).permutation(len(x_calib))[:SENSITIVITY_SAMPLES]
    xs = torch.from_numpy(np.ascontiguousarray(x_calib[np.sort(pick)], np.float32))
    with torch.no_grad():
        y_ref = torch_exec.run(graph, xs)
    power = float((y_ref.double() ** 2).mean()) + 1e-30
    todo = [(n, b) for n in graph.weight_nodes() for b in options[n.name]]
    out: dict[str, dict[int, float]] = {n.name: {} for n in graph.weight_nodes()}
    x_in: dict[str, torch.Tensor] = {}
    for node, b in progress_bar(todo, desc="layer sensitivities", unit="fit", enabled=progress):
        if node.name not in x_in:
            x_in.clear()  # one layer's input kept at a time
            with torch.no_grad():
                x_in[node.name] = xs if node.inputs[0] == graph.input_name else \
                    torch_exec.run(graph, xs, stop_after=node.inputs[0])
        wq, bias = _quantize_alone(node, x_in[node.name], b, method, cfg)
        with torch.no_grad():
            y = torch_exec.run(graph, xs, weights={node.name: (wq, bias)})
        out[node.name][b] = float(((y.double() - y_ref.double()) ** 2).mean()) / power
    return out


def allocate(costs: dict, errors: dict, budget: int) -> dict:
    """The options (per key, e.g. a layer's widths) minimizing the summed error with summed cost <= budget.

    Exact: dp[j] is the least error of the layers so far with at most j bytes above their cheapest
    widths; each layer's choice per j is kept to walk back from the full budget.
    """
    names = list(costs)
    floor = sum(min(costs[n].values()) for n in names)
    spare = budget - floor
    if spare < 0:
        raise NupesError(f"flash budget: {budget} B, the cheapest choice needs {floor} B")
    spare = min(spare, sum(max(c.values()) - min(c.values()) for c in costs.values()))
    dp = np.zeros(spare + 1)
    choices = []
    for n in names:
        cheapest = min(costs[n].values())
        best = np.full(spare + 1, np.inf)
        pick = np.zeros(spare + 1, np.int8)
        for b in sorted(costs[n]):  # ascending bits: on a tie the smaller width wins
            extra = costs[n][b] - cheapest
            if extra > spare:
                continue
            cand = np.full(spare + 1, np.inf)
            cand[extra:] = dp[:spare + 1 - extra] + errors[n][b]
            better = cand < best
            best[better] = cand[better]
            pick[better] = b
        dp = best
        choices.append(pick)
    bits: dict[str, int] = {}
    j = spare
    for n, pick in zip(reversed(names), reversed(choices)):
        b = int(pick[j])
        bits[n] = b
        j -= costs[n][b] - min(costs[n].values())
    return {n: bits[n] for n in names}


@dataclass
class Allocation:
    """The outcome of a flash-budget search, kept in model.nq's metadata."""

    budget: int
    bits: dict[str, int]
    table_free_adds: list[str]  # adds left without rescaling tables: their bytes bought weight bits
    flash_bytes: int  # the model flash of this choice as counted before quantization (an upper bound)
    min_bytes: int
    max_bytes: int
    costs: dict[str, dict[int, int]]
    sensitivity: dict[str, dict[int, float]]
    seconds: float

    def as_meta(self) -> dict:
        return {"budget_bytes": self.budget, "flash_bytes": self.flash_bytes, "min_bytes": self.min_bytes,
                "max_bytes": self.max_bytes, "seconds": self.seconds, "bits": dict(self.bits),
                "table_free_adds": list(self.table_free_adds),
                "cost_bytes": {n: {str(b): c for b, c in v.items()} for n, v in self.costs.items()},
                "sensitivity": {n: {str(b): e for b, e in v.items()} for n, v in self.sensitivity.items()}}


def check_budget(graph: Graph, method: str, budget: int, pins: dict[str, int]) -> tuple[dict, int, int]:
    """Refuse a budget no allocation meets, before any work; returns (costs, min, max)."""
    costs = flash_costs(graph, method, layer_options(graph, pins))
    lo, hi = size_range(graph, costs)
    if budget < lo:
        pinned = f" with the pinned layers ({', '.join(f'{k}={v}' for k, v in sorted(pins.items()))})" if pins else ""
        raise NupesError(f"flash budget {budget:,} B is below the smallest model{pinned}: {lo:,} B "
                         f"(every free layer at 2 bits and adds without tables; weights, tables, bias and "
                         f"requantization as codegen counts them)")
    return costs, lo, hi


def choose_bits(graph: Graph, x_calib: np.ndarray, method: str, budget: int, pins: dict[str, int],
                cfg: reconstruct.ReconConfig | None = None, progress: bool = False) -> Allocation:
    """Per-layer widths for ``budget`` bytes of model flash (see the module docstring)."""
    t0 = time.perf_counter()
    costs, lo, hi = check_budget(graph, method, budget, pins)
    options = layer_options(graph, pins)
    adds = add_options(graph)
    if budget >= hi:  # everything fits at the widest widths: no search
        bits = {n: max(o) for n, o in options.items()}
        tables = {a: 1 for a in adds}
        sens: dict[str, dict[int, float]] = {}
    else:
        sens = sensitivities(graph, x_calib, method, options, cfg, progress)
        fixed = stateful_flash_bytes(graph)  # what the bits do not change
        choice = allocate({**costs, **adds}, {**sens, **{a: {0: 0.0, 1: 0.0} for a in adds}}, budget - fixed)
        bits = {n: choice[n] for n in costs}
        # equal error: the allocation drops every table it can; give back those the leftover bytes pay for
        spare = budget - fixed - sum(costs[n][b] for n, b in bits.items())
        tables = {}
        for a in adds:
            tables[a] = int(spare >= ADD_TABLE_BYTES)
            spare -= ADD_TABLE_BYTES * tables[a]
    used = stateful_flash_bytes(graph) + sum(costs[n][b] for n, b in bits.items()) + ADD_TABLE_BYTES * sum(tables.values())
    table_free = [a[1] for a, t in tables.items() if not t]
    seconds = time.perf_counter() - t0
    if progress:
        print(f"flash budget {budget:,} B: chose bits per layer in {seconds:.1f} s, model {used:,} B "
              f"(range {lo:,}-{hi:,} B)", file=sys.stderr)
    return Allocation(budget, bits, table_free, used, lo, hi, costs, sens, seconds)
