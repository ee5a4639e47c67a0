"""The quantized model: float graph, activation and weight quantization, integer parameters."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .intparams import IntLayer
from .ir import Graph
from .quant.types import ActQuant, LayerWeights


@dataclass
class QuantModel:
    graph: Graph  # float weights kept: the float model is the accuracy reference
    act: dict[str, ActQuant]
    weights: dict[str, LayerWeights]
    params: dict  # node name -> IntLayer | IntAdd | IntClamp
    method: str
    meta: dict = field(default_factory=dict)  # name, calibration summary, seed, timings
    source: bytes | None = None  # the int8 .tflite it came from, run as the oracle (oracle.py)

    @property
    def name(self) -> str:
        return self.meta.get("name", "model")

    @property
    def input_q(self) -> ActQuant:
        return self.act[self.graph.input_name]

    @property
    def output_q(self) -> ActQuant:
        return self.act[self.graph.output_name]

    def fq_weights(self) -> dict:
        """Per layer, the float weights the integer model really uses: s_w,c · sign(q) · L[|q|], as torch
        tensors (torch imported here, so that loading a model file does not import it)."""
        import torch

        from .quant.lower import weight_scale

        out = {}
        for node in self.graph.weight_nodes():
            p: IntLayer = self.params[node.name]
            lw = self.weights[node.name]
            s_w = weight_scale(lw, p.G)
            w = p.levels() * s_w.reshape((-1,) + (1,) * (p.codes.ndim - 1))
            b = node.bias if lw.bias is None else lw.bias
            out[node.name] = (torch.from_numpy(w.astype(np.float32)), torch.from_numpy(b.astype(np.float32)))
        return out

    def act_q(self) -> dict[str, tuple[float, int]]:
        return {k: (v.scale, v.zero_point) for k, v in self.act.items()}
