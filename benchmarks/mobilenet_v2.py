"""MobileNetV2 (Sandler et al. 2018) at a width multiplier, built here with random weights: the shape
of the mobile networks microcontrollers run (inverted residual blocks, depthwise convolutions, 96x96
to 128x128 inputs), for the memory benchmark. Its RAM and instruction counts do not depend on the
weights; its accuracy is meaningless, and nothing reports one."""
from __future__ import annotations

import torch
from torch import nn

# (expansion t, output channels c, repeats n, first stride s), as in the paper's Table 2
BLOCKS = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]


def _conv(c_in: int, c_out: int, k: int = 3, stride: int = 1, groups: int = 1, act: bool = True) -> list:
    layers = [nn.Conv2d(c_in, c_out, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(c_out)]
    return layers + ([nn.ReLU6()] if act else [])


class InvertedResidual(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int, expand: int):
        super().__init__()
        hidden = c_in * expand
        self.residual = stride == 1 and c_in == c_out
        self.body = nn.Sequential(*(_conv(c_in, hidden, 1) if expand != 1 else []),
                                  *_conv(hidden, hidden, 3, stride, hidden), *_conv(hidden, c_out, 1, act=False))

    def forward(self, x):
        return x + self.body(x) if self.residual else self.body(x)


def mobilenet_v2(width: float = 0.35, classes: int = 2, seed: int = 0) -> nn.Module:
    """Channels rounded to multiples of 8, as in the reference implementation; last layer 1280."""
    torch.manual_seed(seed)
    ch = lambda v: max(8, int(v * width + 4) // 8 * 8)  # noqa: E731
    layers, c = _conv(3, ch(32), 3, 2), ch(32)
    for t, c_out, n, s in BLOCKS:
        for i in range(n):
            layers.append(InvertedResidual(c, ch(c_out), s if i == 0 else 1, t))
            c = ch(c_out)
    layers += _conv(c, 1280, 1)
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(1280, classes)).eval()
