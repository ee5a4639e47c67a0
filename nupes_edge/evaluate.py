"""Accuracy of a QuantModel: float, fake-quant and integer-reference top-1, agreement, SQNR."""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from . import torch_exec
from .state import carries
from .intref import dequantize_output, quantize_input, run_int
from .qmodel import QuantModel


def output_metrics(ref: np.ndarray, got: np.ndarray) -> dict:
    """Per-output error of ``got`` against ``ref`` (both real-valued, N x outputs), as ST's
    `stedgeai validate` reports them, needing no labels: max |error|, RMSE, MAE, cosine similarity
    (mean over inputs) and SQNR in dB."""
    ref = np.asarray(ref, np.float64).reshape(len(ref), -1)
    got = np.asarray(got, np.float64).reshape(len(got), -1)
    err = got - ref
    norms = np.linalg.norm(ref, axis=1) * np.linalg.norm(got, axis=1)
    cos = np.where(norms > 0, (ref * got).sum(axis=1) / np.where(norms > 0, norms, 1), 1.0)
    return {"max_abs": float(np.abs(err).max(initial=0)), "rmse": float(np.sqrt((err ** 2).mean())) if err.size else 0.0,
            "mae": float(np.abs(err).mean()) if err.size else 0.0, "cosine": float(cos.mean()) if len(cos) else 1.0,
            "sqnr_db": sqnr_db(ref, got)}


def metrics_text(m: dict) -> str:
    return (f"max |err| {m['max_abs']:.4g}, RMSE {m['rmse']:.4g}, MAE {m['mae']:.4g}, cosine {m['cosine']:.4f}, "
            f"SQNR {m['sqnr_db']:.1f} dB")


@dataclass
class EvalReport:
    n: int
    float_top1: float | None  # None without labels
    fakequant_top1: float | None
    int_top1: float | None
    agreement: float  # fraction of inputs where the integer model's top-1 equals the float model's
    sqnr_db: float  # float logits vs dequantized integer logits
    original: dict | None = None  # the int8 .tflite the model came from, under TFLite Micro (oracle.py)
    metrics: dict | None = None  # the integer reference against the float model (output_metrics)

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


def evaluate(qm: QuantModel, x: np.ndarray, y: np.ndarray | None) -> EvalReport:
    carry = carries(qm)  # a carry model: the rows are one sequence for the float models too
    f = torch_exec.run_numpy(qm.graph, x, carry=carry)
    fq = torch_exec.run_numpy(qm.graph, x, weights=qm.fq_weights(), act_q=qm.act_q(), carry=carry)
    iq = int_logits(qm, x)
    out = qm.output_q
    i_real = dequantize_output(iq, out.scale, out.zero_point)
    from .layout import to_device
    from .oracle import compare_with_source

    xq = quantize_input(x, qm.input_q.scale, qm.input_q.zero_point)
    orig = compare_with_source(qm, to_device(xq), to_device(iq) if iq.ndim == 4 else iq.reshape(len(iq), -1))
    top = lambda z: z.reshape(len(z), -1).argmax(axis=1)  # noqa: E731
    acc = (lambda z: None) if y is None else (lambda z: float((top(z) == y).mean()))  # noqa: E731
    return EvalReport(n=int(len(x)), float_top1=acc(f), fakequant_top1=acc(fq), int_top1=acc(i_real),
                      agreement=float((top(i_real) == top(f)).mean()), sqnr_db=sqnr_db(f.astype(np.float64), i_real),
                      original=None if orig is None else orig.as_dict(),
                      metrics=output_metrics(f, i_real))
