"""nupes_depthwise_conv2d's DSP fast path (multiplier 1: channels in groups of four, runs of
output positions sharing a window shape, precomputed one-SMLAL requantization) against the
integer reference, on both C paths; and that requantization alone against nupes_requantize."""
import os
import shutil
import subprocess

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nupes_edge import runtime_c
from nupes_edge.build import build_host, run_host
from nupes_edge.ir import Graph, Node, infer_shapes
from nupes_edge.layout import from_device
from nupes_edge.quant.driver import quantize_graph
from nupes_edge.verify import reference_io
from tests.boardrun import run_on_board


def depthwise_node(rng, c, k, stride, pads, act):
    w = rng.normal(0, 1, (c, 1, k[0], k[1])).astype(np.float32)
    b = rng.normal(0, 0.5, c).astype(np.float32)
    return Node("dw", "conv2d", ["x"], "y", {"stride": list(stride), "pads": list(pads), "groups": c, "act": act}, w, b)


def quantized(node, in_shape, method, bits, seed, n=16):
    rng = np.random.default_rng(seed)
    g = Graph("x", tuple(in_shape), node.output, [node])
    infer_shapes(g)
    x = rng.normal(0.3, 1.0, (n,) + tuple(in_shape)).astype(np.float32)
    return g, quantize_graph(g, x, method, bits, name="k"), x


def check(tmp_path, g, qm, x, dsp, sanitize=False):
    dev_in, ref = reference_io(qm, x)
    hb = build_host(qm, str(tmp_path), dsp=dsp, sanitize=sanitize)
    np.testing.assert_array_equal(from_device(run_host(hb.runner, dev_in), g.output_shape), ref)


@settings(max_examples=20, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 10_000), c=st.integers(1, 13), kh=st.integers(1, 5), kw=st.integers(1, 5),
       h=st.integers(1, 9), w=st.integers(1, 9), stride=st.sampled_from([(1, 1), (2, 2), (1, 2), (2, 1)]),
       bits=st.integers(2, 8), method=st.sampled_from(["uniform", "powerquant"]), dsp=st.booleans(),
       act=st.sampled_from(["none", "relu", "relu6"]))
def test_depthwise_multiplier_one(tmp_path_factory, seed, c, kh, kw, h, w, stride, bits, method, dsp, act):
    """Channel counts that are not multiples of 4 (a group plus the channel-outer tail, or the tail
    alone), every kernel up to 5x5 (the 3x3 unrolled run and the generic ones), strides, asymmetric
    padding up to k - 1 on each side (border runs of every shape, corners), images smaller than the
    kernel (no interior at all)."""
    rng = np.random.default_rng(seed)
    pads = [int(rng.integers(0, kh)), int(rng.integers(0, kw)), int(rng.integers(0, kh)), int(rng.integers(0, kw))]
    h, w = max(h, kh - pads[0] - pads[2]), max(w, kw - pads[1] - pads[3])  # the padded input holds the kernel
    node = depthwise_node(rng, c, (kh, kw), stride, pads, act)
    g, qm, x = quantized(node, (c, h, w), method, bits, seed)
    check(tmp_path_factory.mktemp("dw"), g, qm, x, dsp)


def test_depthwise_shifts_outside_the_fast_requantization(tmp_path):
    """Channels whose shift is outside [-23, -2] (left shifts, no shift, a shift of 1, very large
    ones) send their group to nupes_requantize; neighbours at the range's ends stay on the fast form.
    Reference and C read the same (edited) multipliers and shifts."""
    rng = np.random.default_rng(3)
    node = depthwise_node(rng, 12, (3, 3), (1, 1), [1, 1, 1, 1], "none")
    g, qm, x = quantized(node, (12, 6, 7), "uniform", 8, 3)
    p = qm.params["dw"]
    p.shift[:] = [-2, -23, -9, -5, 1, 0, -1, -7, -24, -31, -2, -23]
    p.mult[[0, 1, 10, 11]] = 2**31 - 1
    for dsp in (False, True):
        check(tmp_path / str(dsp), g, qm, x, dsp)


def test_depthwise_under_sanitizers(tmp_path):
    """ASan + UBSan on the emulated DSP path: 7 channels (a group and a 3-channel tail), 3x3 with
    asymmetric padding, and 5x3 at stride 2 (generic runs), reading no byte outside the input."""
    rng = np.random.default_rng(11)
    for i, (k, stride, pads, shape) in enumerate([((3, 3), (1, 1), [1, 0, 2, 1], (7, 6, 5)),
                                                 ((5, 3), (2, 2), [2, 1, 1, 0], (7, 7, 6))]):
        node = depthwise_node(rng, 7, k, stride, pads, "relu6")
        g, qm, x = quantized(node, shape, "powerquant", 4, i, n=4)
        check(tmp_path / str(i), g, qm, x, dsp=True, sanitize=True)


HARNESS = r"""
#include <stdio.h>
#include "nupes_depthwise_conv2d.c"
int main(void) {
    long acc, m, shift, zp;
    while (scanf("%ld %ld %ld %ld", &acc, &m, &shift, &zp) == 4) {
        nupes_dw_rq_t q;
        const int32_t want = nupes_requantize((int32_t)acc, (int32_t)m, (int32_t)shift) + (int32_t)zp;
        printf("%d\n", nupes_dw_rq_init(&q, (int32_t)m, (int32_t)shift, (int32_t)zp)
                           ? (int)(nupes_dw_requant((int32_t)acc, &q) == want) : 2);
    }
    return 0;
}
"""


def test_fast_requantization_equals_nupes_requantize(tmp_path):
    """The one-SMLAL form with out_zp folded in, for every shift of its range, random and edge
    accumulators (extremes, rounding ties and their neighbours), multipliers and zero points."""
    inc = os.path.dirname(runtime_c.headers()[0])
    (tmp_path / "h.c").write_text(HARNESS)
    exe = tmp_path / "h"
    subprocess.run(["gcc", "-std=c99", "-O2", "-Wall", "-Wextra", "-Werror", "-DNUPES_DSP_EMULATE", "-I", inc,
                    str(tmp_path / "h.c"), os.path.join(inc, "nupes_decode_row.c"), "-o", str(exe)], check=True)
    rng = np.random.default_rng(5)
    n = 40000
    shift = -rng.integers(2, 24, n)
    mult = rng.integers(2**30, 2**31, n)
    mult[: n // 8] = 2**30  # a power of two: acc * mult / 2^(31+e) lands exactly on ties
    zp = rng.integers(-128, 128, n)
    acc = rng.integers(-2**31, 2**31, n) >> rng.integers(0, 31, n)
    ties = (rng.integers(-2**20, 2**20, n // 4) * 2 + 1) << (-shift[: n // 4])  # odd multiples of 2^e
    acc[: n // 4] = np.clip(ties + rng.integers(-1, 2, n // 4), -2**31, 2**31 - 1)
    edges = np.array([0, 1, -1, 2, -2, 2**31 - 1, -2**31, 2**30, -2**30, -2**30 - 1])
    e = np.arange(2, 24)
    acc = np.concatenate([acc, np.repeat(edges, len(e))])
    mult = np.concatenate([mult, np.full(len(edges) * len(e), 2**31 - 1)])
    shift = np.concatenate([shift, np.tile(-e, len(edges))])
    zp = np.concatenate([zp, np.tile(np.where(e % 2, -128, 127), len(edges))])
    lines = "\n".join(f"{a} {m} {s} {z}" for a, m, s, z in zip(acc, mult, shift, zp))
    out = subprocess.run([str(exe)], input=lines, capture_output=True, text=True, check=True).stdout.split()
    got = np.array(out, np.int64)
    assert len(got) == len(acc) and np.all(got == 1), f"{np.sum(got != 1)} mismatches"


# --- Helium (Cortex-M55, mps3-an547): nupes_depthwise_conv2d's __ARM_FEATURE_MVE path on the emulated board

_on_board = pytest.mark.skipif(shutil.which("qemu-system-arm") is None or shutil.which("arm-none-eabi-gcc") is None,
                               reason="make setup installs qemu-system-arm and arm-none-eabi-gcc")


def _requant_corners(p, rng):
    """Shifts on both sides of every fast form (left shifts where acc << shift fits, none, 1..31
    to the right), the largest multiplier, zero points at the ends of int8, a narrow clamp."""
    n = len(p.shift)
    p.shift = rng.choice(np.array([-31, -24, -23, -12, -2, -1, 0, 1], np.int32), n).astype(np.int32)
    p.mult = rng.integers(1 << 30, (1 << 31) - 1, n).astype(np.int32)
    p.mult[0] = 2**31 - 1
    p.out_zp = int(rng.choice([-128, 127, 5]))
    lo = int(rng.integers(-128, 0))
    p.act_min, p.act_max = lo, int(rng.integers(0, 128))


# (channels, h, w, kernel, stride, pads t/l/b/r, multiplier, method, bits, mutation)
HELIUM = {
    "kws_3x3": (64, 25, 5, (3, 3), (1, 1), [1, 1, 1, 1], 1, "uniform", 8, None),
    "two_channels_odd_width": (2, 7, 9, (3, 3), (1, 1), [1, 1, 1, 1], 1, "uniform", 8, None),
    "three_channels_stride2": (3, 9, 7, (3, 3), (2, 2), [1, 1, 1, 1], 1, "uniform", 8, _requant_corners),
    "17_channels_5x3_asymmetric": (17, 8, 11, (5, 3), (2, 1), [2, 0, 1, 2], 1, "uniform", 8, None),
    "100_channels_stride_2x1": (100, 6, 5, (3, 3), (2, 1), [0, 1, 1, 0], 1, "uniform", 8, _requant_corners),
    "image_smaller_than_kernel": (6, 2, 3, (5, 5), (1, 1), [2, 2, 2, 2], 1, "uniform", 8, None),
    "powerquant_w4": (20, 6, 7, (3, 3), (1, 1), [1, 1, 1, 1], 1, "powerquant", 4, None),
    "multiplier_2_scalar_path": (3, 5, 6, (3, 3), (1, 1), [1, 1, 1, 1], 2, "uniform", 8, None),
    # a padded plane of 324 pixels: staged four channels at a time (eight would not fit 2 KB)
    "plane_staged_by_four": (5, 16, 16, (3, 3), (1, 1), [1, 1, 1, 1], 1, "uniform", 8, _requant_corners),
    # a padded plane over the 2 KB stage: the windows read the input itself, borders over their taps
    "plane_too_large_to_stage": (6, 24, 23, (3, 3), (1, 1), [1, 1, 1, 1], 1, "uniform", 8, _requant_corners),
    "plane_too_large_w4": (5, 25, 22, (5, 5), (2, 1), [2, 2, 2, 2], 1, "powerquant", 4, None),
}


@_on_board
@pytest.mark.parametrize("case", list(HELIUM), ids=list(HELIUM))
def test_depthwise_with_helium_on_the_emulated_m55(tmp_path, case):
    """The Cortex-M55 runs the Helium path (four channels per vector, the last group predicated,
    whole windows from the folded bias: over the group's padded plane staged on the stack when it
    fits 2 KB, eight channels at a time (VMULLB / VMULLT) or four, else over the input with border
    windows over their in-image taps; the vector requantization): channel counts 2, 3, 17, 100 and 64 (KWS; one channel is an ordinary
    convolution here, nupes_conv2d_window's), odd widths, strides, asymmetric
    padding, an image smaller than the kernel, 4-bit power levels, shifts on every side of the
    rounding; a depth multiplier of 2 keeps the scalar path. Bit for bit the integer reference."""
    c, h, w, k, stride, pads, mult, method, bits, mutate = HELIUM[case]
    rng = np.random.default_rng(len(case))
    node = depthwise_node(rng, c, k, stride, pads, "relu6" if mutate is None else "none")
    if mult > 1:
        node.weight = rng.normal(0, 1, (c * mult, 1) + tuple(k)).astype(np.float32)
        node.bias = rng.normal(0, 0.5, c * mult).astype(np.float32)
    g, qm, x = quantized(node, (c, h, w), method, bits, len(case), n=8)
    if mutate is not None:
        mutate(qm.params["dw"], rng)
    _, r = run_on_board(qm, x, tmp_path, "mps3-an547")
    assert "nupes_depthwise_conv2d(" in open(f"{tmp_path}/src/nupes_model_k.c").read()
    assert r.n == len(x) and r.mismatches == 0, r.first_diffs
