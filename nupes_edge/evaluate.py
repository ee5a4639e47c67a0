"""Accuracy of a QuantModel: float, fake-quant and integer-reference top-1, agreement, SQNR."""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from . import torch_exec
from .intref import dequantize_output, quantize_input, run_int
from .qmodel import QuantModel


@dataclass
class EvalReport:
    n: int
    float_top1: float
    fakequant_top1: float
    int_top1: float
    agreement: float  # fraction of inputs where the integer model's top-1 equals the float model's
    sqnr_db: float  # float logits vs dequantized integer logits
    original: dict | None = None  # the int8 .tflite the model came from, under TFLite Micro (oracle.py)

    def as_dict(self) -> dict:
        return asdict(self)


def sqnr_db(ref: np.ndarray, test: np.ndarray) -> float:
    noise = float(((ref - test) ** 2).sum())
    signal = float((ref ** 2).sum())
    return float("inf") if noise == 0 else 10.0 * np.log10(signal / noise)


def int_logits(qm: QuantModel, x: np.ndarray) -> np.ndarray:
    """Quantize float inputs, run the integer reference, return int8 outputs."""
    q = qm.input_q
    return run_int(qm, quantize_input(x, q.scale, q.zero_point))


def evaluate(qm: QuantModel, x: np.ndarray, y: np.ndarray) -> EvalReport:
    f = torch_exec.run_numpy(qm.graph, x)
    fq = torch_exec.run_numpy(qm.graph, x, weights=qm.fq_weights(), act_q=qm.act_q())
    iq = int_logits(qm, x)
    out = qm.output_q
    i_real = dequantize_output(iq, out.scale, out.zero_point)
    from .layout import to_device
    from .oracle import compare_with_source

    xq = quantize_input(x, qm.input_q.scale, qm.input_q.zero_point)
    orig = compare_with_source(qm, to_device(xq), to_device(iq) if iq.ndim == 4 else iq.reshape(len(iq), -1))
    top = lambda z: z.reshape(len(z), -1).argmax(axis=1)  # noqa: E731
    return EvalReport(n=int(len(x)), float_top1=float((top(f) == y).mean()), fakequant_top1=float((top(fq) == y).mean()),
                      int_top1=float((top(i_real) == y).mean()), agreement=float((top(i_real) == top(f)).mean()),
                      sqnr_db=sqnr_db(f.astype(np.float64), i_real), original=None if orig is None else orig.as_dict())
