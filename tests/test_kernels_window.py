"""nupes_conv2d_window (first convolutions: 1 to 4 input channels, k_h * k_w * c_in <= 64), bit for
bit against the integer reference, on the portable and the emulated DSP path, built with
AddressSanitizer and UndefinedBehaviorSanitizer: the shapes of the real first layers (MLPerf Tiny
KWS 10x4 stride 2 SAME, mnist5k / digits 3x3), random shapes with asymmetric padding, odd position
and channel counts, chunk boundaries, every width, and requantizations outside the kernel's fused
path (shifts >= 0 or < -23) and extreme zero points and activation ranges."""
import shutil

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nupes_edge.build import build_host, run_host
from nupes_edge.ir import Graph, infer_shapes
from nupes_edge.layout import from_device
from nupes_edge.quant.driver import quantize_graph
from nupes_edge.verify import reference_io
from tests.boardrun import run_on_board
from tests.test_kernels import conv_node
from tests.test_kernels_specialized import kernels_of


def _check(tmp_path, node, in_shape, method, bits, seed, dsp, n=6, mutate=None):
    rng = np.random.default_rng(seed)
    g = Graph("x", tuple(in_shape), node.output, [node])
    infer_shapes(g)
    x = rng.normal(0.3, 1.0, (n,) + tuple(in_shape)).astype(np.float32)
    qm = quantize_graph(g, x, method, bits, name="k")
    if mutate is not None:
        mutate(qm.params[node.name], rng)
    dev_in, ref = reference_io(qm, x)
    hb = build_host(qm, str(tmp_path), dsp=dsp, sanitize=True)
    assert "nupes_conv2d_window(" in open(f"{tmp_path}/src/nupes_model_k.c").read()
    np.testing.assert_array_equal(from_device(run_host(hb.runner, dev_in), g.output_shape), ref)


# (c_in, h, w, c_out, (kh, kw), stride, pads t/l/b/r)
REAL = {
    "kws": (1, 49, 10, 64, (10, 4), (2, 2), [4, 1, 5, 1]),
    "kws_odd_c": (1, 49, 10, 37, (10, 4), (2, 2), [4, 1, 5, 1]),
    "mnist5k": (1, 28, 28, 16, (3, 3), (1, 1), [1, 1, 1, 1]),
    "digits": (1, 8, 8, 16, (3, 3), (1, 1), [1, 1, 1, 1]),
    "rgb_s2": (3, 11, 9, 33, (3, 3), (2, 2), [0, 0, 1, 1]),
    "max_taps": (4, 7, 6, 5, (4, 4), (1, 2), [3, 0, 0, 3]),
    "one_channel_out": (2, 5, 5, 1, (2, 3), (1, 1), [1, 2, 0, 0]),
    "kernel_1x1": (3, 3, 5, 7, (1, 1), (1, 1), [0, 0, 0, 0]),
    "whole_input": (1, 3, 4, 6, (3, 4), (1, 1), [2, 3, 2, 3]),
}


@pytest.mark.parametrize("dsp", [False, True], ids=["portable", "dsp"])
@pytest.mark.parametrize("bits", [8, 4, 2])
@pytest.mark.parametrize("shape", list(REAL), ids=list(REAL))
def test_window_real_shapes(tmp_path, shape, bits, dsp):
    c_in, h, w, c_out, k, stride, pads = REAL[shape]
    rng = np.random.default_rng(bits)
    node = conv_node(rng, c_in, c_out, k, stride, pads, False, "relu" if bits != 4 else "none")
    _check(tmp_path, node, (c_in, h, w), "uniform" if bits == 8 else "powerquant", bits, bits, dsp)


@settings(max_examples=24, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 10_000), c_in=st.integers(1, 4), c_out=st.integers(1, 70), kh=st.integers(1, 10),
       kw=st.integers(1, 4), stride=st.sampled_from([(1, 1), (2, 2), (2, 1), (1, 2)]), bits=st.integers(2, 8),
       act=st.sampled_from(["none", "relu", "relu6"]), dsp=st.booleans())
def test_window_random_shapes(tmp_path_factory, seed, c_in, c_out, kh, kw, stride, bits, act, dsp):
    rng = np.random.default_rng(seed)
    if kh * kw * c_in > 64:
        kh = max(1, 64 // (kw * c_in))
    pads = [int(rng.integers(0, kh)), int(rng.integers(0, kw)), int(rng.integers(0, kh)), int(rng.integers(0, kw))]
    shape = (c_in, kh + int(rng.integers(0, 6)), kw + int(rng.integers(0, 6)))
    node = conv_node(rng, c_in, c_out, (kh, kw), stride, pads, False, act)
    if kh == kw == 1 and stride == (1, 1) and not any(pads) and c_in == 4:
        assert kernels_of(node, shape, "uniform", 8) == ["nupes_conv2d_1x1"]
        return
    _check(tmp_path_factory.mktemp("w"), node, shape, "uniform" if bits == 8 else "powerquant", bits, seed, dsp)


def _requant_corners(p, rng):
    """Shifts on both sides of the fused path (1..23 to the right), zero points at the ends of the
    int8 range, narrow activation ranges: the reference computes with whatever is stored."""
    n = len(p.shift)
    p.shift = rng.choice(np.array([-31, -30, -24, -23, -22, -12, -2, -1, 0], np.int32), n).astype(np.int32)
    p.mult = rng.integers(1 << 30, (1 << 31) - 1, n).astype(np.int32)
    p.out_zp = int(rng.choice([-128, -100, 0, 127]))
    lo = int(rng.integers(-128, 60))
    p.act_min, p.act_max = lo, int(rng.integers(lo, 128))


def _requant_fused(p, rng):
    """Every shift inside the fused path, the zero point at either end."""
    n = len(p.shift)
    p.shift = rng.integers(-23, 0, n).astype(np.int32)
    p.mult = rng.integers(1 << 30, (1 << 31) - 1, n).astype(np.int32)
    p.out_zp = int(rng.choice([-128, 127]))
    p.act_min, p.act_max = -128, 127


@pytest.mark.parametrize("dsp", [False, True], ids=["portable", "dsp"])
@pytest.mark.parametrize("mutate", [_requant_corners, _requant_fused], ids=["corners", "fused"])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_window_requantization(tmp_path, seed, mutate, dsp):
    rng = np.random.default_rng(seed)
    node = conv_node(rng, 1, 2 * seed + 3, (10, 4), (2, 2), [4, 1, 5, 1], False, "none")
    _check(tmp_path, node, (1, 15, 7), "uniform", 8, seed, dsp, n=12, mutate=mutate)


# --- the Cortex-M55 (mps3-an547): nupes_conv2d_window's Helium loop for int8 weights

HELIUM = [  # (shape of REAL, mutation): two chunks of channels (37 > 32), one output channel,
    # positions not a multiple of four, padding wider than the image, three and four input channels
    ("kws_odd_c", None), ("mnist5k", _requant_fused), ("rgb_s2", _requant_corners), ("max_taps", None),
    ("one_channel_out", _requant_corners), ("whole_input", None), ("kernel_1x1", _requant_fused),
]


@pytest.mark.skipif(shutil.which("qemu-system-arm") is None or shutil.which("arm-none-eabi-gcc") is None,
                    reason="make setup installs qemu-system-arm and arm-none-eabi-gcc")
@pytest.mark.parametrize("shape,mutate", HELIUM, ids=[f"{s}-{m.__name__ if m else 'as_is'}" for s, m in HELIUM])
def test_window_s8_with_helium_on_the_emulated_m55(tmp_path, shape, mutate):
    """Four positions' int8 windows (in_zp for padding, the bias folded), VMLADAVA, the vector
    requantization and a predicated scatter store: bit for bit the integer reference on the board."""
    c_in, h, w, c_out, k, stride, pads = REAL[shape]
    rng = np.random.default_rng(len(shape))
    node = conv_node(rng, c_in, c_out, k, stride, pads, False, "relu" if mutate is None else "none")
    g = Graph("x", (c_in, h, w), node.output, [node])
    infer_shapes(g)
    x = rng.normal(0.3, 1.0, (8, c_in, h, w)).astype(np.float32)
    qm = quantize_graph(g, x, "uniform", 8, name="k")
    if mutate is not None:
        mutate(qm.params[node.name], rng)
    _, r = run_on_board(qm, x, tmp_path, "mps3-an547")
    assert "nupes_conv2d_window(" in open(f"{tmp_path}/src/nupes_model_k.c").read()
    assert r.n == len(x) and r.mismatches == 0, r.first_diffs


# (shape of REAL, method, bits, level bits): tables whose levels are int8 values times 2^E (quantize
# --levels int8, and every 2-bit table) run the same loop over rows decoded on the stack (two chunks,
# 3- and 5-bit fields that cross bytes); int16 levels keep the DSP loop on the M55
HELIUM_TABLES = [("kws_odd_c", "nupes", 4, 8), ("rgb_s2", "powerquant", 3, 8), ("max_taps", "powerquant", 5, 8),
                 ("mnist5k", "powerquant", 2, 16), ("one_channel_out", "powerquant", 8, 8),
                 ("digits", "powerquant", 4, 16)]


@pytest.mark.skipif(shutil.which("qemu-system-arm") is None or shutil.which("arm-none-eabi-gcc") is None,
                    reason="make setup installs qemu-system-arm and arm-none-eabi-gcc")
@pytest.mark.parametrize("shape,method,bits,levels", HELIUM_TABLES,
                         ids=[f"{s}-{m}-w{b}-int{lv}" for s, m, b, lv in HELIUM_TABLES])
def test_window_tables_with_helium_on_the_emulated_m55(tmp_path, shape, method, bits, levels):
    c_in, h, w, c_out, k, stride, pads = REAL[shape]
    rng = np.random.default_rng(bits + levels)
    node = conv_node(rng, c_in, c_out, k, stride, pads, False, "relu")
    g = Graph("x", (c_in, h, w), node.output, [node])
    infer_shapes(g)
    x = rng.normal(0.3, 1.0, (6, c_in, h, w)).astype(np.float32)
    qm = quantize_graph(g, x, method, bits, name="k", levels=levels)
    from nupes_edge.codegen.plan import helium_levels
    p = qm.params[node.name]
    assert np.max(p.lut) > 127  # a real table (G > 0), not the identity
    assert helium_levels(p.lut, p.bits) == (levels == 8 or bits == 2)  # int16 levels: the DSP loop's case
    _, r = run_on_board(qm, x, tmp_path, "mps3-an547")
    assert "nupes_conv2d_window(" in open(f"{tmp_path}/src/nupes_model_k.c").read()
    assert r.n == len(x) and r.mismatches == 0, r.first_diffs
