"""TFLite interoperability benchmark: the same quantized model as our integer reference and as
exported .tflite files in the real interpreters, top-1 on the held-out test split.

    python benchmarks/tflite.py [--update-readme]

Columns: nupes int ref (bit-exact C/board), float export in LiteRT (NUPES-dequantized weights,
float activations), int8 export in TFLite Micro (weights re-quantized to int8 per channel when
a != 1), tflm-lut export in TFLite Micro (b-bit LUT-compressed weights), and the file sizes.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from nupes_edge import examples, tflite_export  # noqa: E402
import readme_block  # noqa: E402
from nupes_edge.fileio import atomic_write_bytes  # noqa: E402
from nupes_edge.importers import import_module  # noqa: E402
from nupes_edge.interpreters import run_litert, run_tflm  # noqa: E402
from nupes_edge.intref import quantize_input, run_int  # noqa: E402
from nupes_edge.layout import to_device  # noqa: E402
from nupes_edge.quant.driver import quantize_graph  # noqa: E402



def tflm_top1(data: bytes, rows: np.ndarray, y) -> float:
    return float((run_tflm(data, rows).argmax(1) == y).mean())


def litert_top1(data: bytes, x: np.ndarray, y) -> float:
    return float((run_litert(data, x).argmax(1) == y).mean())


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--configs", default="nupes:4,nupes:3,uniform:8")
    p.add_argument("--update-readme", action="store_true")
    args = p.parse_args()
    torch.set_num_threads(1)
    rows = []
    for name in examples.NAMES:
        g = import_module(examples.model(name), examples.models.example_input(name), name)
        xc, _ = examples.load(name, "calib")
        x, y = examples.load(name, "test")
        for cfg in args.configs.split(","):
            method, bits = cfg.split(":")
            print(f"[tflite] {name} {method} W{bits} ...", file=sys.stderr, flush=True)
            qm = quantize_graph(g, xc, method, int(bits), name=name)
            xq = quantize_input(x, qm.input_q.scale, qm.input_q.zero_point)
            ours = float((run_int(qm, xq).reshape(len(x), -1).argmax(1) == y).mean())
            f32, i8 = tflite_export.export(qm, "float"), tflite_export.export(qm, "int8")
            row = {"example": name, "method": method, "wbits": int(bits), "nupes_int_top1": ours,
                   "float_tflite_litert_top1": litert_top1(f32, x.transpose(0, 2, 3, 1), y),
                   "int8_tflite_tflm_top1": tflm_top1(i8, to_device(xq), y),
                   "float_bytes": len(f32), "int8_bytes": len(i8)}
            if int(bits) <= 7:
                lut = tflite_export.export(qm, "tflm-lut")
                row.update(tflm_lut_top1=tflm_top1(lut, to_device(xq), y), tflm_lut_bytes=len(lut))
            rows.append(row)
            print(json.dumps(row), file=sys.stderr)
    atomic_write_bytes(os.path.join(HERE, "results", "tflite.json"), (json.dumps(rows, indent=1) + "\n").encode())
    md = ("| example | method | W | nupes int ref | float .tflite (LiteRT) | int8 .tflite (TFLM) | tflm-lut .tflite (TFLM) | bytes float / int8 / lut |\n"
          "|---|---|---:|---:|---:|---:|---:|---|\n")
    for r in rows:
        lut = f"{r['tflm_lut_top1']:.2%}" if "tflm_lut_top1" in r else "– (8-bit: no LUT)"
        md += (f"| {r['example']} | {r['method']} | {r['wbits']} | {r['nupes_int_top1']:.2%} | {r['float_tflite_litert_top1']:.2%} | "
               f"{r['int8_tflite_tflm_top1']:.2%} | {lut} | {r['float_bytes']} / {r['int8_bytes']} / {r.get('tflm_lut_bytes', '–')} |\n")
    print(md)
    if args.update_readme:
        readme_block.replace("tflite", f"Measured with `python benchmarks/tflite.py --update-readme`:\n\n{md}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
