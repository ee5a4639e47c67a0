"""What bias correction does for the data-free methods (mnist5k, validation split, one thread).

    python benchmarks/bias_correction.py
"""
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from nupes_edge import examples  # noqa: E402
from nupes_edge.api import load_graph  # noqa: E402
from nupes_edge.evaluate import evaluate  # noqa: E402
from nupes_edge.quant.driver import quantize_graph  # noqa: E402

torch.set_num_threads(1)
graph, _ = load_graph("mnist5k", progress=False)
x_cal, _ = examples.load("mnist5k", "calib")
x, y = examples.load("mnist5k", "val")
for method in ("uniform", "powerquant"):
    for bc in (False, True):
        r = evaluate(quantize_graph(graph, x_cal, method, 4, bias_correction=bc), x, y)
        print(f"{method:<10} W4 bias_correction={bc!s:<5} int top-1 {r.int_top1:.1%}")
