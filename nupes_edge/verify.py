"""Compare a device's outputs with the integer reference (bit for bit), labels and the float model."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from . import torch_exec
from .intref import quantize_input, run_int
from .layout import from_device, to_device
from .qmodel import QuantModel


@dataclass
class VerifyReport:
    n: int
    mismatches: int  # inputs whose device output differs from the reference in any byte
    device_top1: float  # device top-1 against the labels
    agreement: float  # device top-1 equal to the float model's top-1
    first_diffs: list = field(default_factory=list)  # up to 5: {index, reference, device}

    def as_dict(self) -> dict:
        return asdict(self)

    def text(self) -> str:
        lines = [f"  inputs            {self.n}", f"  mismatches        {self.mismatches}",
                 f"  device top-1      {self.device_top1:.2%}", f"  agreement (float) {self.agreement:.2%}"]
        for d in self.first_diffs:
            lines.append(f"  input {d['index']}: reference {d['reference']}\n{'':>{len(str(d['index'])) + 9}}device    {d['device']}")
        return "\n".join(lines)


def reference_io(qm: QuantModel, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(device-layout int8 inputs, reference int8 outputs in IR layout) for float inputs x."""
    xq = quantize_input(x, qm.input_q.scale, qm.input_q.zero_point)
    return to_device(xq), run_int(qm, xq)


def compare(qm: QuantModel, x: np.ndarray, y: np.ndarray, ref: np.ndarray, device_raw: np.ndarray) -> VerifyReport:
    dev = from_device(device_raw, qm.graph.output_shape)
    diff_rows = np.nonzero((dev.reshape(len(dev), -1) != ref.reshape(len(ref), -1)).any(axis=1))[0]
    f = torch_exec.run_numpy(qm.graph, x)
    top = dev.reshape(len(dev), -1).argmax(axis=1)
    first = [{"index": int(i), "reference": ref[i].ravel().tolist(), "device": dev[i].ravel().tolist()} for i in diff_rows[:5]]
    return VerifyReport(n=int(len(x)), mismatches=int(len(diff_rows)), device_top1=float((top == y).mean()),
                        agreement=float((top == f.reshape(len(f), -1).argmax(axis=1)).mean()), first_diffs=first)
