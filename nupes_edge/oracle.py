"""The original .tflite as an independent oracle: the file a model came from, run under TFLite
Micro's interpreter (the ``tflite-micro`` wheel) on the same int8 inputs as the integer reference.

Comparing the C code with nupes-edge's own reference only proves that the two agree; when the
model came from an int8 .tflite, the file itself says what the model must compute. A model that
keeps the file exactly (uniform W8, the file's weights, activations and final SOFTMAX) must give
the file's outputs byte for byte, and any difference fails verification. A re-quantized model
(other widths or methods) is reported against the file: top-1 agreement and SQNR.

The file's bytes travel inside model.nq (``QuantModel.source``), so the comparison works wherever
the .nq goes. They are untrusted like everything in it: they are parsed again by nupes-edge's own
importer (bounded, shape-checked) before TFLite Micro sees them.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import NupesError
from .qmodel import QuantModel
from .state import carries

MAX_SOURCE_BYTES = 16 << 20


@dataclass
class OracleResult:
    what: str  # "kept" (must be identical) or "requantized" (reported)
    mismatches: int | None  # kept: inputs whose reference output differs from the file's
    agreement: float  # top-1 of the reference equal to the file's
    sqnr_db: float  # reference vs file, on dequantized outputs
    note: str = ""

    def as_dict(self) -> dict:
        return {"what": self.what, "mismatches": self.mismatches, "agreement": self.agreement,
                "sqnr_db": self.sqnr_db, "note": self.note}


def _dequantized(y: np.ndarray, scale: float, zp: int) -> np.ndarray:
    """TFLite's DEQUANTIZE: float32 scale times (q - zero point) in float32."""
    return np.float32(scale) * (y.astype(np.float32) - np.float32(zp))


def run_source(src: bytes, dev_in: np.ndarray, in_q, carry: bool = False) -> np.ndarray:
    """The file under TFLite Micro on int8 inputs ``dev_in`` (N, bytes, device order). A file that takes
    floats (a QUANTIZE first) gets the real values those codes stand for under ``in_q``, which its
    QUANTIZE turns back into the same codes when it is the model's input quantization. ``carry``: the
    rows are one sequence (TFLite Micro reset once, not before every row: a "carry" model's semantics)."""
    from tflite_micro import runtime

    from .interpreters import run_tflm

    i_det = runtime.Interpreter.from_bytes(bytes(src)).get_input_details(0)
    if i_det["dtype"] == np.float32:
        dev_in = np.float32(in_q.scale) * (dev_in.astype(np.float32) - np.float32(in_q.zero_point))
    elif i_det["dtype"] == np.uint8:  # the importer kept its QUANTIZE only as a shift of the zero point by 128
        dev_in = (dev_in.astype(np.int16) + 128).astype(np.uint8)
    elif i_det["dtype"] != np.int8:
        raise NupesError(f"the source .tflite takes {np.dtype(i_det['dtype']).name} inputs")
    return run_tflm(bytes(src), dev_in, carry=carry).reshape(len(dev_in), -1)


def exact_expected(qm: QuantModel) -> bool:
    """True when the model is the file's model exactly, final SOFTMAX included."""
    kept = qm.meta.get("kept_from_file", {})
    return (isinstance(kept, dict) and str(kept.get("weights", "")).startswith("int8 weights")
            and not qm.graph.output_softmax)


def compare_with_source(qm: QuantModel, dev_in: np.ndarray, ref_rows: np.ndarray) -> OracleResult | None:
    """Run the model's source .tflite on ``dev_in`` (N, bytes: int8 inputs in the device's order,
    which is the file's) and compare with the reference's outputs ``ref_rows`` (N, bytes, device
    order). None when the model has no int8 source file to compare with."""
    src = qm.source
    if src is None:
        return None
    if len(src) > MAX_SOURCE_BYTES:
        raise NupesError(f"the model's source .tflite is {len(src)} bytes (at most {MAX_SOURCE_BYTES})")
    from .importers import import_tflite_bytes

    import_tflite_bytes(bytes(src), "the model's source .tflite")  # validated by our own importer first
    from tflite_micro import runtime

    it = runtime.Interpreter.from_bytes(bytes(src))
    i_det, o_det = it.get_input_details(0), it.get_output_details(0)
    iq = i_det["quantization_parameters"]
    ours = (float(np.float32(qm.input_q.scale)), int(qm.input_q.zero_point))
    if i_det["dtype"] == np.float32:  # the file quantizes its float input itself, with the kept quantization
        file_in = ours if qm.meta.get("kept_from_file") else None
    elif i_det["dtype"] == np.uint8 and len(iq["scales"]) == 1:  # uint8 codes = int8 codes + 128
        file_in = (float(iq["scales"][0]), int(iq["zero_points"][0]) - 128)
    elif i_det["dtype"] != np.int8 or len(iq["scales"]) != 1:
        return None
    else:
        file_in = (float(iq["scales"][0]), int(iq["zero_points"][0]))
    if file_in != ours:
        return OracleResult("requantized", None, float("nan"), float("nan"),
                            note=f"input quantization {ours} differs from the file's {file_in} (--recalibrate): "
                                 "not compared")
    want = run_source(src, dev_in, qm.input_q, carry=carries(qm))  # a carry model: one sequence, as run_int
    oq = qm.output_q
    wq = o_det["quantization_parameters"]
    if want.dtype == np.uint8 and len(wq["scales"]) == 1:  # uint8 output codes = int8 codes + 128
        want = (want.astype(np.int16) - 128).astype(np.int8)
        wq = {"scales": wq["scales"], "zero_points": np.asarray(wq["zero_points"]) - 128}
    if want.dtype == np.int8:
        want_real = _dequantized(want, float(wq["scales"][0]), int(wq["zero_points"][0]))
        got = ref_rows
    else:  # the file ends in DEQUANTIZE: its outputs are floats
        want_real = want.astype(np.float32)
        got = _dequantized(ref_rows, oq.scale, oq.zero_point)
    got_real = _dequantized(ref_rows, oq.scale, oq.zero_point)
    if got_real.shape != want_real.shape:
        raise NupesError(f"the source .tflite gives outputs of shape {list(want_real.shape[1:])}, the model "
                         f"{list(got_real.shape[1:])}")
    agreement = float((got_real.argmax(axis=1) == want_real.argmax(axis=1)).mean())
    if qm.graph.output_softmax:  # logits against the file's probabilities: only the top-1 compares
        return OracleResult("requantized", None, agreement, float("nan"),
                            note="the file's final SOFTMAX is left to the caller: top-1 compared only")
    noise = float(((got_real.astype(np.float64) - want_real) ** 2).sum())
    signal = float((want_real.astype(np.float64) ** 2).sum())
    sqnr = float("inf") if noise == 0 else 10 * np.log10(max(signal, 1e-30) / noise)
    if exact_expected(qm):
        mismatches = int((got.astype(np.float64) != want.astype(np.float64)).any(axis=1).sum())
        return OracleResult("kept", mismatches, agreement, sqnr)
    return OracleResult("requantized", None, agreement, sqnr)
