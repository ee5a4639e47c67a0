"""MLPerf Tiny's two reference models end to end on the emulated STM32.

    python benchmarks/mlperf_tiny.py [--models ic,kws] [--n 100] [--board-n 100] [--update-readme]

Models: ../shared/models/mlperf-tiny (MLCommons, Apache-2.0), image classification (ResNet-8,
CIFAR-10) and keyword spotting (DS-CNN), each as a float and an int8 .tflite. Their test data is
not available offline, so every figure here is on synthetic inputs, said in the table:
``--n`` random int8 input codes under the int8 file's input quantization (dequantized for the float
models), and, for the methods that learn, 256 more such inputs (another seed) as calibration data.

Configurations, per model:
- int8 file, uniform W8: the file kept exactly (no data). Checked against TFLite Micro on the same
  int8 inputs (the final SOFTMAX included) and run on the board.
- int8 file, powerquant W4 and W3: weights re-quantized without data, the file's activation
  quantization kept.
- float file, nupes W4 and W3: learned on the synthetic calibration inputs.
Each is built for the emulated STM32 and run there (``--board-n`` inputs): flash, RAM, emulated
instructions per inference (beside TFLite Micro + CMSIS-NN on the int8 file, from
../shared/notes/anchor-tflm.md), board mismatches against the integer reference, and the output
SQNR (logits, the softmax input) against the float model and against the int8 file's model.
Writes benchmarks/results/mlperf_tiny.json; --update-readme rewrites README's mlperf block.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

from nupes_edge import api, artifact, torch_exec  # noqa: E402
import readme_block  # noqa: E402
from nupes_edge.fileio import atomic_write_bytes  # noqa: E402
from nupes_edge.importers import import_tflite  # noqa: E402
from nupes_edge.interpreters import run_tflm  # noqa: E402
from nupes_edge.intref import run_int  # noqa: E402
from nupes_edge.quant.driver import quantize_graph  # noqa: E402
from nupes_edge.quant.reconstruct import ReconConfig  # noqa: E402

MLPERF_DIR = os.path.abspath(os.path.join(ROOT, "..", "shared", "models", "mlperf-tiny"))
FILES = {"ic": ("pretrainedResnet.tflite", "pretrainedResnet_quant.tflite"),
         "kws": ("kws_ref_model_float32.tflite", "kws_ref_model.tflite")}
TFLM = json.load(open(os.path.join(HERE, "data", "tflm_cmsis_nn.json")))
CONFIGS = [("int8", "uniform", 8), ("int8", "powerquant", 4), ("int8", "powerquant", 3),
           ("float", "nupes", 4), ("float", "nupes", 3)]
RESULTS = os.path.join(HERE, "results", "mlperf_tiny.json")


def logits(qm, xq: np.ndarray) -> np.ndarray:
    """The dequantized softmax input (or output, when there is no softmax) of the integer model."""
    seen = {}
    out = run_int(qm, xq, record=lambda name, y: seen.__setitem__(name, y))
    last = qm.graph.nodes[-1]
    name = last.inputs[0] if last.op == "softmax" else qm.graph.output_name
    q = qm.act[name]
    y = seen.get(name, out)
    return (y.reshape(len(xq), -1).astype(np.float64) - q.zero_point) * q.scale


def sqnr_db(ref: np.ndarray, y: np.ndarray) -> float | None:
    """Signal-to-noise ratio in dB, rounded; None when y equals ref exactly."""
    noise = float(((ref - y) ** 2).sum())
    return None if noise == 0 else round(float(10 * np.log10(float((ref ** 2).sum()) / noise)), 2)


def synthetic_codes(qm_int8, n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(-128, 128, (n, *qm_int8.graph.input_shape)).astype(np.int8)


def dequantize(qm, codes: np.ndarray) -> np.ndarray:
    q = qm.input_q
    return ((codes.astype(np.float64) - q.zero_point) * q.scale).astype(np.float32)


def run_board(qm, x: np.ndarray, n: int) -> tuple[dict, object]:
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "m.nq")
        artifact.save(qm, path)
        data = os.path.join(d, "x.npz")
        np.savez(data, x=x[:n].transpose(0, 2, 3, 1), y=np.zeros(n, np.int64))  # N x H x W x C, as the file
        fb, report = api.run_emulated(path, "stm32", os.path.join(d, "out"), data, n, progress=False)
    return fb.sizes, report


def measure(key: str, n: int, board_n: int) -> list[dict] | None:
    paths = [os.path.join(MLPERF_DIR, f) for f in FILES[key]]
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        print(f"[mlperf] {key}: {missing[0]} is absent: skipped", file=sys.stderr)
        return None
    g_float, g_int8 = import_tflite(paths[0]), import_tflite(paths[1])
    kept = quantize_graph(g_int8, None, "uniform", 8, name=key)
    codes = synthetic_codes(kept, n, seed=0)
    x = dequantize(kept, codes)
    x_calib = dequantize(kept, synthetic_codes(kept, 256, seed=1))
    ref_float = torch_exec.run_numpy(g_float, x).reshape(n, -1).astype(np.float64)
    ref_int8 = logits(kept, codes)
    tflm = run_tflm(open(paths[1], "rb").read(), codes.transpose(0, 2, 3, 1))
    rows = []
    for source, method, bits in CONFIGS:
        print(f"[mlperf] {key}: {source} file, {method} W{bits} ...", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        if (source, method, bits) == ("int8", "uniform", 8):
            qm = kept
        elif source == "int8":
            qm = quantize_graph(g_int8, None, method, bits, name=key)
        else:
            qm = quantize_graph(g_float, x_calib, method, bits, name=key, recon=ReconConfig(iters=400, batch=32))
        seconds = time.perf_counter() - t0
        xq_in = codes if qm.input_q == kept.input_q else None
        if xq_in is None:  # its own input quantization: the same real inputs, quantized its way
            from nupes_edge.intref import quantize_input
            xq_in = quantize_input(x, qm.input_q.scale, qm.input_q.zero_point)
        y = logits(qm, xq_in)
        row = {"model": key, "source": source, "method": method, "wbits": bits, "quantize_s": round(seconds, 1),
               "sqnr_vs_float_db": sqnr_db(ref_float, y),
               "sqnr_vs_int8_db": sqnr_db(ref_int8, y),
               "kept_from_file": qm.meta.get("kept_from_file")}
        if qm is kept:
            full = run_int(kept, codes).reshape(n, -1)
            row["tflm_mismatches"] = int((full != tflm).any(axis=1).sum())
        sizes, report = run_board(qm, x, board_n)
        row.update(flash=sizes["flash_used"], ram=sizes["ram_used"], arena=sizes["arena_bytes"],
                   scratch=sizes["scratch_bytes"], instructions=round(report.count_mean),
                   board_n=report.n, board_mismatches=report.mismatches)
        print(f"[mlperf] {key} {source} {method} W{bits}: {row}", file=sys.stderr, flush=True)
        rows.append(row)
    return rows


def markdown(rows: list[dict], n: int) -> str:
    md = ("| model | from | weights | flash B (TFLM) | RAM B | instructions (TFLM + CMSIS-NN) | board: inputs, mismatches "
          "| = TFLite Micro | SQNR vs float | SQNR vs int8 file |\n"
          "|---|---|---|---:|---:|---:|---|---|---:|---:|\n")
    for r in rows:
        t = TFLM["models"].get(r["model"], {})
        tf_flash = t.get("flash_int8") or t.get("flash")
        flash = f"{r['flash']:,}" + (f" ({tf_flash:,}; {tf_flash / r['flash']:.1f}x smaller)" if tf_flash else "")
        instr = f"{r['instructions']:,}" + (f" ({t['total']:,}; {r['instructions'] / t['total']:.2f}x)" if t.get("total") else "")
        exact = (f"{n - r['tflm_mismatches']}/{n} equal" if "tflm_mismatches" in r else "-")
        sq_i8 = "exact" if r["sqnr_vs_int8_db"] is None else f"{r['sqnr_vs_int8_db']:.1f} dB"
        kind = "kept exactly" if r["source"] == "int8" and r["method"] == "uniform" else (
            "no data" if r["source"] == "int8" else "synthetic calib.")
        md += (f"| {r['model']} | {r['source']} .tflite | {r['method']} W{r['wbits']} ({kind}) | {flash} | {r['ram']:,} | "
               f"{instr} | {r['board_n']}, {r['board_mismatches']} | {exact} | {r['sqnr_vs_float_db']:.1f} dB | {sq_i8} |\n")
    return md


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="ic,kws")
    ap.add_argument("--n", type=int, default=100, help="synthetic inputs for SQNR and TFLite Micro (default 100)")
    ap.add_argument("--board-n", type=int, default=100, help="of them, run on the emulated board (default 100)")
    ap.add_argument("--update-readme", action="store_true")
    args = ap.parse_args()
    rows = []
    for key in args.models.split(","):
        got = measure(key, args.n, min(args.board_n, args.n))
        rows += got or []
    if not rows:
        print(f"no MLPerf Tiny model found in {MLPERF_DIR}", file=sys.stderr)
        return 2
    md = markdown(rows, args.n)
    print(md)
    os.makedirs(os.path.dirname(RESULTS), exist_ok=True)
    atomic_write_bytes(RESULTS, json.dumps(rows, indent=1).encode())
    if args.update_readme:
        cmd = (f"Measured with `python benchmarks/mlperf_tiny.py --update-readme` (QEMU netduinoplus2, `-icount "
               f"shift=0`; {args.n} random int8 inputs under the int8 file's input quantization, no real test data "
               "offline; SQNR of the logits):\n\n")
        readme_block.replace("mlperf", cmd + md)
    bad = [r for r in rows if r["board_mismatches"] or r.get("tflm_mismatches")]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
