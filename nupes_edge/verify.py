"""Compare a device's outputs with the integer reference (bit for bit), labels and the float model."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from . import torch_exec
from .state import carries
from .intref import quantize_input, run_int
from .layout import from_device, to_device
from .qmodel import QuantModel


@dataclass
class VerifyReport:
    n: int
    mismatches: int  # inputs whose device output differs from the reference in any byte
    device_top1: float | None  # device top-1 against the labels (None without labels)
    agreement: float  # device top-1 equal to the float model's top-1
    first_diffs: list = field(default_factory=list)  # up to 5: {index, reference, device}
    # the int8 .tflite the model came from, under TFLite Micro (oracle.py), or None
    original: dict | None = None
    metrics: dict | None = None  # the device's dequantized outputs against the float model (evaluate.output_metrics)

    @property
    def failed(self) -> bool:
        """Any device byte off the reference, or a kept model off its original file."""
        return self.mismatches > 0 or bool(self.original and self.original.get("mismatches"))

    def as_dict(self) -> dict:
        return asdict(self)

    def text(self) -> str:
        from .evaluate import metrics_text

        top1 = "no labels" if self.device_top1 is None else f"{self.device_top1:.2%}"
        lines = [f"  inputs            {self.n}", f"  mismatches        {self.mismatches}",
                 f"  device top-1      {top1}", f"  agreement (float) {self.agreement:.2%}"]
        if self.metrics:
            lines.append(f"  vs float model    {metrics_text(self.metrics)}")
        o = self.original
        if o is not None:
            if o["what"] == "kept":
                lines.append(f"  original .tflite  {o['mismatches']} of {self.n} outputs differ from TFLite Micro on "
                             "the file" + (" (the model is not the file's model)" if o["mismatches"] else
                                           " (reference = original file, bit for bit)"))
            elif o["note"]:
                lines.append(f"  original .tflite  {o['note']}")
            if o["what"] != "kept" and o["agreement"] == o["agreement"]:
                sq = "" if o["sqnr_db"] != o["sqnr_db"] else f", SQNR {o['sqnr_db']:.1f} dB"
                lines.append(f"  vs original file  top-1 agreement {o['agreement']:.2%}{sq} (TFLite Micro on the file)")
        for d in self.first_diffs:
            lines.append(f"  input {d['index']}: reference {d['reference']}\n{'':>{len(str(d['index'])) + 9}}device    {d['device']}")
        return "\n".join(lines)


def reference_io(qm: QuantModel, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(device-layout int8 inputs, reference int8 outputs in IR layout) for float inputs x."""
    xq = quantize_input(x, qm.input_q.scale, qm.input_q.zero_point)
    return to_device(xq), run_int(qm, xq)


def compare(qm: QuantModel, x: np.ndarray, y: np.ndarray | None, ref: np.ndarray, device_raw: np.ndarray) -> VerifyReport:
    from .evaluate import output_metrics
    from .intref import dequantize_output
    from .oracle import compare_with_source

    dev = from_device(device_raw, qm.graph.output_shape)
    ref_rows = to_device(ref) if ref.ndim == 4 else ref.reshape(len(ref), -1)
    xq = quantize_input(x, qm.input_q.scale, qm.input_q.zero_point)
    orig = compare_with_source(qm, to_device(xq), ref_rows)
    diff_rows = np.nonzero((dev.reshape(len(dev), -1) != ref.reshape(len(ref), -1)).any(axis=1))[0]
    f = torch_exec.run_numpy(qm.graph, x, carry=carries(qm))
    top = dev.reshape(len(dev), -1).argmax(axis=1)
    first = [{"index": int(i), "reference": ref[i].ravel().tolist(), "device": dev[i].ravel().tolist()} for i in diff_rows[:5]]
    out_q = qm.output_q
    metrics = output_metrics(f, dequantize_output(dev.reshape(len(dev), -1), out_q.scale, out_q.zero_point))
    return VerifyReport(n=int(len(x)), mismatches=int(len(diff_rows)),
                        device_top1=None if y is None else float((top == y).mean()), metrics=metrics,
                        agreement=float((top == f.reshape(len(f), -1).argmax(axis=1)).mean()), first_diffs=first,
                        original=None if orig is None else orig.as_dict())


@dataclass
class DeviceReport(VerifyReport):
    board: str = ""
    count_kind: str = ""  # "cycles" (DWT on silicon) or "emulated_instructions" (QEMU -icount)
    count_mean: float = 0.0
    count_min: int = 0
    count_max: int = 0
    count_last: int = 0  # the last inference's, the one the per-layer profile is of
    retries: int = 0
    profile: list = field(default_factory=list)  # [{layer, op, count}] of the last inference
    stack_used: int | None = None  # bytes of stack at the deepest since reset (a painted high-water mark)

    def text(self) -> str:
        unit = "instructions (emulated, not cycles)" if self.count_kind == "emulated_instructions" else self.count_kind
        lines = [f"  board             {self.board}", super().text(),
                 f"  per inference     mean {self.count_mean:,.0f}, min {self.count_min:,}, max {self.count_max:,} {unit}"]
        if self.stack_used is not None:
            lines.append(f"  stack (measured)  {self.stack_used:,} B at the deepest since reset")
        if self.retries:
            lines.append(f"  frames retried    {self.retries}")
        if self.profile:
            total = sum(p["count"] for p in self.profile) or 1
            lines.append(f"  per layer (last inference): the layers add up to {total:,} of its {self.count_last:,}; the "
                         f"other {self.count_last - total:,} are the model function around them (calls, the output copy)")
            lines += [f"    {p['layer']:<22} {p['op']:<24} {p['count']:>12,}  {p['count'] / total:6.1%}" for p in self.profile]
        return "\n".join(lines)


def _count_kind(hello, board) -> tuple[str, float]:
    """(kind, divisor converting the device's raw count to that kind)."""
    if hello.count_kind == 0:
        return "cycles", 1.0
    if hello.count_kind == 2 and board is not None and board.emulated:
        q = board.qemu
        counts_per_instruction = q["counter_timer"]["hz"] * (2 ** q["icount_shift"]) * 1e-9
        return "emulated_instructions", counts_per_instruction
    return ("timer_ticks" if hello.count_kind == 2 else "systick_ticks"), 1.0


def verify_device(qm: QuantModel, client, x: np.ndarray, y: np.ndarray, profile: bool = False,
                  progress: bool = False) -> DeviceReport:
    """Check the device's model hash, run every input on it, compare with the reference."""
    from . import boards
    from .progress import bar as progress_bar
    from .codegen import model_hash, plan
    from .errors import NupesError

    hello = client.hello()
    want = model_hash(qm)
    if hello.model_hash != want:
        raise NupesError(f"the board runs model '{hello.model}' with hash {hello.model_hash[:16]}, but this build's "
                         f"model hash is {want[:16]}: flash the firmware built from this model")
    dev_in, ref = reference_io(qm, x)
    if hello.input_size != dev_in.shape[1]:
        raise NupesError(f"the board's input size {hello.input_size} differs from the model's {dev_in.shape[1]}")
    try:
        board = boards.get(hello.board)
    except NupesError:
        board = None
    kind, div = _count_kind(hello, board)
    if carries(qm):  # the inputs are one sequence, from the reset state whatever the board ran before
        client.reset_state()
    outs, counts = [], []
    for row in progress_bar(dev_in, desc=f"verifying on {hello.board}", unit="input", enabled=progress):
        count, out = client.infer(row.tobytes())
        if len(out) != hello.output_size:
            raise NupesError(f"the board returned {len(out)} output bytes, expected {hello.output_size}")
        outs.append(np.frombuffer(out, np.int8))
        counts.append(int(round(count / div)))
    base = compare(qm, x, y, ref, np.stack(outs))
    prof = []
    if profile:
        steps = plan(qm).steps
        prof = [{"layer": s.node_name, "op": s.op, "count": int(round(c / div))} for s, c in zip(steps, client.profile())]
    try:
        stack_used = client.stack()[0]
    except NupesError:  # firmware built before the STACK frame
        stack_used = None
    return DeviceReport(**base.as_dict(), board=hello.board, count_kind=kind, count_mean=float(np.mean(counts)),
                        count_min=int(min(counts)), count_max=int(max(counts)), count_last=counts[-1],
                        retries=client.retried, profile=prof,
                        stack_used=stack_used)
