"""Retrain the bundled examples' float CNNs and write their weights into the package.

    OMP_NUM_THREADS=1 python scripts/train_examples.py [--write]

Training (nupes_edge.examples.models.train: Adam + one-cycle, seed 0, one thread) is
deterministic on one machine but not across CPUs, which is why the weights are shipped: every
machine then quantizes the same float model and the README's numbers reproduce. Without --write
this only prints the retrained and the shipped models' test accuracy (tests/test_examples.py
checks they agree within a stated margin).
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from nupes_edge import examples  # noqa: E402
from nupes_edge.examples.models import train, weights_path  # noqa: E402
from nupes_edge.fileio import atomic_write_bytes  # noqa: E402


def accuracy(net, name: str) -> float:
    x, y = examples.load(name, "test")
    with torch.no_grad():
        return float((net(torch.from_numpy(x)).argmax(1).numpy() == y).mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--write", action="store_true", help="replace the shipped weights")
    args = ap.parse_args()
    torch.set_num_threads(1)
    for name in examples.NAMES:
        net = train(name, progress=True)
        print(f"{name}: retrained {accuracy(net, name):.2%}, shipped {accuracy(examples.model(name), name):.2%}")
        if args.write:
            import io

            buf = io.BytesIO()
            np.savez_compressed(buf, **{k: v.numpy() for k, v in net.state_dict().items()})
            atomic_write_bytes(weights_path(name), buf.getvalue())


if __name__ == "__main__":
    main()
