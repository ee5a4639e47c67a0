"""nupes_conv2d_im2col (convolutions with in_c % 4 == 0 other than pointwise ones, weights of int8
identity levels or 2- / 4-bit codes through tables of level pairs), bit for bit against the integer
reference: on the host (portable and emulated DSP paths, AddressSanitizer and
UndefinedBehaviorSanitizer) the real strided layers of digits and mnist5k and random shapes (odd
sizes, stride 2, asymmetric padding, channel counts not a multiple of 2, more channels than one
chunk of requantization records, a single output position, an odd number of positions), shifts
outside the kernel's fused requantization, extreme zero points and activation ranges; and on the
emulated STM32 (the Thumb-2 loops the host does not run) on the same kinds of corner cases."""
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

KERNEL = {8: "nupes_conv2d_im2col_s8", 4: "nupes_conv2d_im2col_p4", 2: "nupes_conv2d_im2col_p2"}


def _method(bits, seed):
    """8 bits: uniform (identity levels, the only 8-bit weights the kernel takes); 2 / 4 bits:
    power tables (a != 1) or uniform ones."""
    return "uniform" if bits == 8 or seed % 3 == 0 else "powerquant"


def _quantized(node, in_shape, method, bits, seed, n, mutate, levels=16):
    rng = np.random.default_rng(seed)
    g = Graph("x", tuple(in_shape), node.output, [node])
    infer_shapes(g)
    x = rng.normal(0.3, 1.0, (n,) + tuple(in_shape)).astype(np.float32)
    qm = quantize_graph(g, x, method, bits, name="k", levels=levels)
    if mutate is not None:
        mutate(qm.params[node.name], rng)
    return g, qm, x


def _check(tmp_path, node, in_shape, bits, seed, dsp, n=6, mutate=None, method=None):
    g, qm, x = _quantized(node, in_shape, method or _method(bits, seed), bits, seed, n, mutate)
    dev_in, ref = reference_io(qm, x)
    hb = build_host(qm, str(tmp_path), dsp=dsp, sanitize=True)
    assert f"{KERNEL[bits]}(" in open(f"{tmp_path}/src/nupes_model_k.c").read()
    np.testing.assert_array_equal(from_device(run_host(hb.runner, dev_in), g.output_shape), ref)


# (c_in, h, w, c_out, (kh, kw), stride, pads t/l/b/r)
REAL = {
    "digits_conv2d_3": (16, 8, 8, 32, (3, 3), (2, 2), [1, 1, 1, 1]),
    "mnist5k_conv2d_3": (16, 14, 14, 32, (3, 3), (2, 2), [1, 1, 1, 1]),
    "mnist5k_conv2d_4": (32, 7, 7, 32, (3, 3), (1, 1), [1, 1, 1, 1]),
    "odd_channels": (12, 5, 7, 9, (3, 3), (2, 2), [1, 1, 1, 1]),
    "chunk_plus_one": (8, 5, 5, 33, (3, 3), (2, 2), [0, 0, 0, 0]),
    "three_chunks_odd_positions": (8, 9, 9, 65, (3, 3), (2, 2), [1, 1, 1, 1]),
    "one_position": (8, 3, 3, 5, (3, 3), (1, 1), [0, 0, 0, 0]),
    "one_position_padded": (12, 1, 1, 3, (3, 3), (2, 2), [1, 1, 1, 1]),
    "four_channels_5x5": (4, 6, 6, 3, (5, 5), (1, 1), [2, 2, 2, 2]),
    "asymmetric": (20, 4, 9, 7, (2, 3), (1, 2), [1, 2, 0, 0]),
    "odd_groups": (4, 7, 5, 6, (3, 7), (2, 1), [2, 3, 0, 3]),
    "strided_1x1": (12, 7, 6, 5, (1, 1), (2, 2), [0, 0, 0, 0]),
    "kws_pointwise": (64, 25, 5, 64, (1, 1), (1, 1), [0, 0, 0, 0]),
    "pointwise_odd": (12, 3, 5, 7, (1, 1), (1, 1), [0, 0, 0, 0]),
}


@pytest.mark.parametrize("dsp", [False, True], ids=["portable", "dsp"])
@pytest.mark.parametrize("bits", [8, 4, 2])
@pytest.mark.parametrize("shape", list(REAL), ids=list(REAL))
def test_im2col_real_and_corner_shapes(tmp_path, shape, bits, dsp):
    c_in, h, w, c_out, k, stride, pads = REAL[shape]
    rng = np.random.default_rng(bits + len(shape))
    node = conv_node(rng, c_in, c_out, k, stride, pads, False, "relu" if bits != 4 else "none")
    _check(tmp_path, node, (c_in, h, w), bits, bits + len(shape), dsp)


@settings(max_examples=20, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 10_000), c_in=st.sampled_from([4, 8, 12, 16, 24]), c_out=st.integers(1, 40),
       kh=st.integers(1, 5), kw=st.integers(1, 5), stride=st.sampled_from([(1, 1), (2, 2), (2, 1), (1, 2)]),
       bits=st.sampled_from([2, 4, 8]), act=st.sampled_from(["none", "relu", "relu6"]), dsp=st.booleans())
def test_im2col_random_shapes(tmp_path_factory, seed, c_in, c_out, kh, kw, stride, bits, act, dsp):
    rng = np.random.default_rng(seed)
    if c_in == 4 and kh * kw * c_in <= 64:
        kh, kw = 5, 4  # few channels and few taps go to nupes_conv2d_window
    pads = [int(rng.integers(0, kh)), int(rng.integers(0, kw)), int(rng.integers(0, kh)), int(rng.integers(0, kw))]
    shape = (c_in, max(1, kh - pads[0] - pads[2]) + int(rng.integers(0, 5)),
             max(1, kw - pads[1] - pads[3]) + int(rng.integers(0, 5)))
    node = conv_node(rng, c_in, c_out, (kh, kw), stride, pads, False, act)
    _check(tmp_path_factory.mktemp("i"), node, shape, bits, seed, dsp)


def test_other_weights_keep_the_decoding_kernel():
    """Widths 3, 5, 6, 7 and 8-bit power tables decode into scratch (nupes_conv2d, or
    nupes_conv2d_1x1 when pointwise); few input channels keep their own kernel; the layer's flash is what the
    flash-budget search counts (the pair tables are made on the stack)."""
    from nupes_edge.codegen.plan import layer_flash_bytes, plan
    rng = np.random.default_rng(0)
    node = conv_node(rng, 8, 4, (3, 3), (2, 2), [1, 1, 1, 1], False)
    for method, bits in [("powerquant", 3), ("uniform", 5), ("powerquant", 6), ("powerquant", 7), ("powerquant", 8)]:
        assert kernels_of(node, (8, 6, 6), method, bits) == ["nupes_conv2d"], (method, bits)
    for bits in (2, 4, 8):
        assert kernels_of(node, (8, 6, 6), "uniform", bits) == [KERNEL[bits]]
    pointwise = conv_node(rng, 8, 4, (1, 1), (1, 1), [0, 0, 0, 0], False)
    assert kernels_of(pointwise, (8, 5, 5), "uniform", 8) == [KERNEL[8]]
    assert kernels_of(pointwise, (8, 5, 5), "powerquant", 8) == ["nupes_conv2d_1x1"]
    assert kernels_of(conv_node(rng, 4, 4, (3, 3), (2, 2), [1, 1, 1, 1], False), (4, 6, 6), "uniform", 4) == \
        ["nupes_conv2d_window"]
    for method, bits in [("uniform", 8), ("powerquant", 4), ("powerquant", 2)]:
        _, qm, _ = _quantized(node, (8, 6, 6), method, bits, 0, 4, None)
        r = plan(qm).report
        assert r["flash_weights_bytes"] + r["flash_tables_bytes"] + r["flash_meta_bytes"] == \
            layer_flash_bytes("conv2d", node.weight.shape, bits, table_free=bits == 8)


def _requant_corners(p, rng):
    """Shifts on both sides of the fused path (1..23 to the right): the whole layer then takes the
    plain requantization; zero points at the ends of the int8 range, narrow activation ranges."""
    n = len(p.shift)
    p.shift = rng.choice(np.array([-31, -30, -24, -23, -22, -12, -2, -1, 0], np.int32), n).astype(np.int32)
    p.mult = rng.integers(1 << 30, (1 << 31) - 1, n).astype(np.int32)
    p.out_zp = int(rng.choice([-128, -100, 0, 127]))
    lo = int(rng.integers(-128, 60))
    p.act_min, p.act_max = lo, int(rng.integers(lo, 128))


def _requant_fused(p, rng):
    """Every shift inside the fused path (both ends included), the zero point at either end, the
    full int8 range (the one-SSAT clamp)."""
    n = len(p.shift)
    p.shift = rng.integers(-23, 0, n).astype(np.int32)
    p.shift[0] = -23
    p.shift[n // 2] = -1
    p.mult = rng.integers(1 << 30, (1 << 31) - 1, n).astype(np.int32)
    p.out_zp = int(rng.choice([-128, 127]))
    p.act_min, p.act_max = -128, 127


def _requant_left(p, rng):
    """Left shifts (1 and 2: acc << shift before the multiply) beside 0 and right shifts, any multiplier:
    the Helium tail's VSHL-by-register branch (the layers here keep acc << 2 within int32)."""
    n = len(p.shift)
    p.shift = rng.choice(np.array([2, 1, 0, -1, -9], np.int32), n).astype(np.int32)
    p.shift[0], p.shift[-1] = 1, 2
    p.mult = rng.integers(1 << 30, (1 << 31) - 1, n).astype(np.int32)
    assert int(np.max(p.acc_bound)) << 2 < 2**31
    p.out_zp = int(rng.integers(-20, 20))


def _requant_fused_narrow(p, rng):
    """The fused path with a clamp narrower than int8 (relu6-like) and a mid-range zero point."""
    _requant_fused(p, rng)
    p.out_zp = int(rng.integers(-100, 100))
    p.act_min = int(rng.integers(-128, 0))
    p.act_max = int(rng.integers(0, 128))


MUTATIONS = [_requant_corners, _requant_fused, _requant_fused_narrow]


@pytest.mark.parametrize("dsp", [False, True], ids=["portable", "dsp"])
@pytest.mark.parametrize("mutate", MUTATIONS, ids=["corners", "fused", "fused_narrow"])
@pytest.mark.parametrize("bits", [8, 4, 2])
def test_im2col_requantization(tmp_path, bits, mutate, dsp):
    rng = np.random.default_rng(bits)
    node = conv_node(rng, 8, 2 * bits + 1, (3, 3), (2, 2), [1, 1, 1, 1], False, "none")
    _check(tmp_path, node, (8, 7, 5), bits, bits, dsp, n=12, mutate=mutate)


# --- the emulated board: the Thumb-2 loops and requantization tail

_on_board = pytest.mark.skipif(shutil.which("qemu-system-arm") is None or shutil.which("arm-none-eabi-gcc") is None,
                               reason="make setup installs qemu-system-arm and arm-none-eabi-gcc")

BOARD = [  # (shape of REAL, bits, mutation)
    ("digits_conv2d_3", 8, None), ("digits_conv2d_3", 4, None), ("digits_conv2d_3", 2, None),
    ("three_chunks_odd_positions", 8, _requant_fused_narrow), ("three_chunks_odd_positions", 4, _requant_corners),
    ("three_chunks_odd_positions", 2, _requant_fused),
    ("odd_groups", 8, _requant_corners), ("odd_groups", 4, _requant_fused_narrow), ("odd_groups", 2, None),
    ("one_position_padded", 4, _requant_fused), ("asymmetric", 2, _requant_fused_narrow),
    ("chunk_plus_one", 8, _requant_fused),
    ("kws_pointwise", 8, None), ("kws_pointwise", 2, _requant_fused_narrow), ("pointwise_odd", 4, _requant_corners),
]


@_on_board
@pytest.mark.parametrize("shape,bits,mutate", BOARD,
                         ids=[f"{s}-w{b}-{m.__name__ if m else 'as_is'}" for s, b, m in BOARD])
def test_im2col_on_the_emulated_board(tmp_path, shape, bits, mutate):
    _im2col_on_board(tmp_path, shape, bits, mutate, "stm32")


# Shapes for the Helium loop only (the host and M4 cases above cover the other paths): pointwise
# layers read straight from the input (stride 1, no padding; a position count that is and is not a
# multiple of four), output channel counts 1, 3, 17 and 100, a 100-channel input (k % 16 = 4).
HELIUM_SHAPES = {
    "pointwise_direct_100_to_17": (100, 4, 3, 17, (1, 1), (1, 1), [0, 0, 0, 0]),
    "pointwise_direct_odd_positions": (12, 3, 5, 3, (1, 1), (1, 1), [0, 0, 0, 0]),
    "one_output_channel": (8, 5, 7, 1, (3, 3), (1, 1), [1, 1, 1, 1]),
    "three_output_channels_stride2": (20, 9, 7, 3, (3, 3), (2, 2), [1, 0, 1, 1]),
    "wide_100_to_100": (100, 5, 3, 100, (3, 1), (1, 1), [1, 0, 1, 0]),
}
HELIUM = [case for case in BOARD if case[1] == 8] + [
    ("pointwise_direct_100_to_17", 8, None), ("pointwise_direct_odd_positions", 8, _requant_corners),
    ("one_output_channel", 8, _requant_fused_narrow), ("three_output_channels_stride2", 8, _requant_corners),
    ("wide_100_to_100", 8, _requant_fused),
]


@_on_board
@pytest.mark.parametrize("shape,bits,mutate", HELIUM,
                         ids=[f"{s}-w{b}-{m.__name__ if m else 'as_is'}" for s, b, m in HELIUM])
def test_im2col_s8_with_helium_on_the_emulated_m55(tmp_path, shape, bits, mutate):
    """The Cortex-M55 runs nupes_conv2d_im2col_s8's Helium loop (VMLADAVA over int8 windows, four
    positions at a time, a predicated row tail, the four outputs requantized as one vector and
    stored by one scatter): windows of k % 16 != 0 bytes, a position count that is not a multiple
    of four, padding, pointwise layers read in place, 1, 3, 17 and 100 output channels, shifts on
    every side of the rounding."""
    _im2col_on_board(tmp_path, shape, bits, mutate, "mps3-an547")


# 4- and 2-bit codes on the M55, decoded to int8 levels inside the Helium loop (a VLDRB gather from
# the 16-entry table; for 2 bits a VLDRW gather of a byte's four levels): power tables with
# --levels int8 and 2-bit tables of either kind, on the shapes above; and a 4-bit table of int16
# levels, which keeps the DSP loop: (shape, bits, mutation, level bits)
HELIUM_CODES = [
    ("digits_conv2d_3", 4, None, 8), ("three_chunks_odd_positions", 4, _requant_corners, 8),
    ("pointwise_direct_100_to_17", 4, _requant_fused, 8), ("pointwise_direct_odd_positions", 2, None, 16),
    ("one_output_channel", 4, _requant_fused_narrow, 8), ("three_output_channels_stride2", 2, _requant_corners, 8),
    ("wide_100_to_100", 2, _requant_fused, 16), ("odd_groups", 4, None, 8), ("asymmetric", 2, None, 16),
    ("kws_pointwise", 4, None, 16), ("one_position_padded", 4, _requant_left, 8),
    ("pointwise_direct_odd_positions", 4, _requant_left, 8),
]


@_on_board
@pytest.mark.parametrize("shape,bits,mutate,levels", HELIUM_CODES,
                         ids=[f"{s}-w{b}-{m.__name__ if m else 'as_is'}-int{lv}" for s, b, m, lv in HELIUM_CODES])
def test_im2col_codes_with_helium_on_the_emulated_m55(tmp_path, shape, bits, mutate, levels):
    """nupes_conv2d_im2col_p4 / _p2 on the Cortex-M55: codes decoded in the loop (rows stored
    (c0, c2, c1, c3), a k % 16 tail under DLSTP's predicate), the sums shifted back by the table's
    2^E, the folded bias: bit for bit the integer reference."""
    _im2col_on_board(tmp_path, shape, bits, mutate, "mps3-an547", method="powerquant", levels=levels)


@_on_board
def test_int8_levels_take_the_helium_loop_on_the_m55(tmp_path):
    """The same 4-bit layer on the M55 with int16 and with int8 levels: both bit-exact, and the int8
    one runs the Helium loop (under half the instructions: the DSP loop's count is about 3.5x; a
    dispatch that never took Helium would give equal counts)."""
    c_in, h, w, c_out, k, stride, pads = REAL["digits_conv2d_3"]
    counts = {}
    for levels in (16, 8):
        rng = np.random.default_rng(5)
        node = conv_node(rng, c_in, c_out, k, stride, pads, False, "relu")
        _, qm, x = _quantized(node, (c_in, h, w), "powerquant", 4, 5, 4, None, levels)
        _, r = run_on_board(qm, x, tmp_path / str(levels), "mps3-an547", profile=True)
        assert r.mismatches == 0, r.first_diffs
        counts[levels] = r.count_mean
    assert counts[8] < 0.5 * counts[16], counts


def _im2col_on_board(tmp_path, shape, bits, mutate, board, method=None, levels=16):
    from nupes_edge import boards, firmware
    from nupes_edge.flash import start_qemu
    from nupes_edge.protocol import Client
    from nupes_edge.verify import verify_device

    c_in, h, w, c_out, k, stride, pads = {**REAL, **HELIUM_SHAPES}[shape]
    seed = 7 * bits + len(shape)
    rng = np.random.default_rng(seed)
    node = conv_node(rng, c_in, c_out, k, stride, pads, False, "relu" if bits == 8 else "none")
    _, qm, x = _quantized(node, (c_in, h, w), method or _method(bits, seed), bits, seed, 8, mutate, levels)
    if method == "powerquant":  # a real table; what the C decides (nupes_mve_lut8), mirrored
        from nupes_edge.codegen.plan import helium_levels
        p = qm.params[node.name]
        assert np.max(p.lut) > 127 and helium_levels(p.lut, p.bits) == (levels == 8 or bits == 2)
    _, r = run_on_board(qm, x, tmp_path, board)
    assert f"{KERNEL[bits]}(" in open(f"{tmp_path}/src/nupes_model_k.c").read()
    assert r.n == len(x) and r.mismatches == 0, r.first_diffs
