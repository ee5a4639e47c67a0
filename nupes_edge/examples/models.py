"""The reference CNNs of the bundled examples: BN, a residual add and a depthwise conv each."""
from __future__ import annotations

import os

import numpy as np
import torch
import torch.nn as nn

from ..errors import NupesError
from .datasets import NAMES, load


def _cbr(cin: int, cout: int, k: int = 3, stride: int = 1, groups: int = 1, relu: bool = True) -> list[nn.Module]:
    layers = [nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    return layers + [nn.ReLU()] if relu else layers


class ResidualDW(nn.Module):
    """Depthwise 3×3 → pointwise 1×1, added to the input (MobileNet-style residual)."""

    def __init__(self, c: int):
        super().__init__()
        self.body = nn.Sequential(*_cbr(c, c, 3, groups=c), *_cbr(c, c, 1, relu=False))
        self.relu = nn.ReLU()

    def forward(self, x):
        return self.relu(x + self.body(x))


class DigitsCNN(nn.Module):
    """8×8 digits: 16-ch conv, residual depthwise block, strided conv, avg-pool, dense."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(*_cbr(1, 16), ResidualDW(16), *_cbr(16, 32, stride=2), nn.AvgPool2d(2))
        self.classifier = nn.Linear(32 * 2 * 2, 10)

    def forward(self, x):
        return self.classifier(torch.flatten(self.features(x), 1))


class Mnist5kCNN(nn.Module):
    """28×28 MNIST: conv, max-pool, residual depthwise block, two convs, global pool, dense."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(*_cbr(1, 16), nn.MaxPool2d(2), ResidualDW(16),
                                      *_cbr(16, 32, stride=2), *_cbr(32, 32), nn.AdaptiveAvgPool2d(1))
        self.classifier = nn.Linear(32, 10)

    def forward(self, x):
        return self.classifier(torch.flatten(self.features(x), 1))


_ARCH = {"digits": DigitsCNN, "mnist5k": Mnist5kCNN}
_TRAIN = {"digits": dict(epochs=40, lr=3e-3, batch=64), "mnist5k": dict(epochs=12, lr=3e-3, batch=64)}


def build(name: str) -> nn.Module:
    if name not in _ARCH:
        raise NupesError(f"unknown example '{name}' (bundled: {', '.join(NAMES)})")
    return _ARCH[name]()


def train(name: str, progress: bool = True) -> nn.Module:
    """Train the example's CNN deterministically on one thread (seconds)."""
    from ..progress import bar as progress_bar

    cfg = _TRAIN[name]
    x, y = load(name, "train")
    torch.manual_seed(0)
    net = build(name)
    opt = torch.optim.Adam(net.parameters(), lr=cfg["lr"])
    steps = cfg["epochs"] * ((len(x) + cfg["batch"] - 1) // cfg["batch"])
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg["lr"], total_steps=steps)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    gen = torch.Generator().manual_seed(0)
    net.train()
    bar = progress_bar(total=steps, desc=f"training {name}", unit="step", enabled=progress)
    for _ in range(cfg["epochs"]):
        perm = torch.randperm(len(x), generator=gen)
        for i in range(0, len(x), cfg["batch"]):
            idx = perm[i:i + cfg["batch"]]
            loss = nn.functional.cross_entropy(net(xt[idx]), yt[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            bar.update(1)
    bar.close()
    return net.eval()


WEIGHTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "weights")


def weights_path(name: str) -> str:
    return os.path.join(WEIGHTS, f"{name}.npz")


def model(name: str, progress: bool = True) -> nn.Module:
    """The trained reference CNN of a bundled example, from the weights shipped in the package
    (examples/weights/<name>.npz, written by scripts/train_examples.py with ``train``): training is
    deterministic on one machine but not across CPUs, so every machine quantizes this same model."""
    del progress  # kept for callers: loading is instant
    net = build(name)
    path = weights_path(name)
    try:
        with np.load(path, allow_pickle=False) as z:
            state = {k: torch.from_numpy(np.array(z[k])) for k in z.files}
        net.load_state_dict(state)
    except (OSError, ValueError, KeyError, RuntimeError) as e:
        raise NupesError(f"{path}: the bundled {name} weights cannot be read ({e}); reinstall nupes-edge") from None
    return net.eval()


def example_input(name: str) -> torch.Tensor:
    x, _ = load(name, "calib")
    return torch.from_numpy(np.ascontiguousarray(x[:1]))
