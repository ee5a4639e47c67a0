"""nupes_max_pool2d and nupes_add against the integer reference, portable and (emulated) DSP path:
random channel counts (not only multiples of 4), kernels, strides, padding, scales and clamps."""
import dataclasses

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nupes_edge import codegen
from nupes_edge.build import build_host, run_host
from nupes_edge.errors import NupesError
from nupes_edge.intref.fixedpoint import quantize_multiplier
from nupes_edge.ir import Graph, Node, infer_shapes
from nupes_edge.layout import from_device
from nupes_edge.quant.driver import quantize_graph
from nupes_edge.verify import reference_io

settings_ = settings(max_examples=8, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])


def quantized(nodes, in_shape, x):
    g = Graph("x", tuple(in_shape), nodes[-1].output, nodes)
    infer_shapes(g)
    return quantize_graph(g, x, "uniform", 8, name="k")


def check_both_paths(tmp_path, qm, x, sanitize=False):
    """The generated C, portable and DSP (emulated), equals the reference bit for bit."""
    dev_in, ref = reference_io(qm, x)
    for dsp in (False, True):
        hb = build_host(qm, str(tmp_path / f"dsp{int(dsp)}"), dsp=dsp, sanitize=sanitize)
        np.testing.assert_array_equal(from_device(run_host(hb.runner, dev_in), qm.graph.output_shape), ref)


def add_graph(rng, c, gain, act):
    """z = x + conv1x1(x): the conv's random gain gives its output, the add's second input, a scale
    unrelated to the input's."""
    wt = (rng.normal(0, 1, (c, c, 1, 1)) * gain).astype(np.float32)
    conv = Node("conv", "conv2d", ["x"], "y", {"stride": [1, 1], "pads": [0, 0, 0, 0], "groups": 1, "act": "none"},
                wt, rng.normal(0, gain, c).astype(np.float32))
    return [conv, Node("add", "add", ["x", "y"], "z", {"act": act})]


@settings_
@given(seed=st.integers(0, 10_000), c=st.integers(1, 9), kh=st.integers(1, 3), kw=st.integers(1, 3),
       sh=st.integers(1, 2), sw=st.integers(1, 2), h=st.integers(3, 8), w=st.integers(3, 8),
       padded=st.booleans(), clamp=st.booleans())
def test_max_pool_random_shapes(tmp_path_factory, seed, c, kh, kw, sh, sw, h, w, padded, clamp):
    rng = np.random.default_rng(seed)
    pads = [int(rng.integers(0, k // 2 + 1)) if padded else 0 for k in (kh, kw, kh, kw)]  # at most k // 2
    node = Node("p", "maxpool2d", ["x"], "z", {"kernel": [kh, kw], "stride": [sh, sw], "pads": pads})
    # a skewed input: many values sit at the quantized minimum, where padding must not win
    x = np.maximum(rng.normal(0.0, 1.0, (12, c, h, w)), -0.3).astype(np.float32)
    qm = quantized([node], (c, h, w), x)
    if clamp:  # a pool with a fused clamp: bounds narrower than int8 (one of them may stay at the edge)
        lo, hi = sorted(int(v) for v in rng.integers(-128, 128, 2))
        qm.params["p"] = dataclasses.replace(qm.params["p"], lo=lo, hi=hi)
    check_both_paths(tmp_path_factory.mktemp("mp"), qm, x)


def test_max_pool_common_shapes(tmp_path):
    """2x2 / stride 2 over 16 channels (mnist5k), 3x3 / stride 2 padded, 1x1, odd channel counts,
    and clamps narrower than int8 (lo only, hi only, both) over 4 + 3 channels."""
    rng = np.random.default_rng(3)
    cases = [((16, 8, 8), [2, 2], [2, 2], [0, 0, 0, 0], None), ((12, 7, 9), [3, 3], [2, 2], [1, 1, 1, 1], None),
             ((5, 4, 4), [1, 1], [1, 1], [0, 0, 0, 0], None), ((7, 5, 6), [2, 3], [1, 2], [1, 1, 0, 1], None),
             ((4, 2, 2), [2, 2], [2, 2], [0, 0, 0, 0], None), ((7, 6, 6), [2, 2], [2, 2], [0, 0, 0, 0], (-20, 127)),
             ((7, 6, 6), [3, 3], [1, 1], [1, 1, 1, 1], (-128, 30)), ((8, 6, 6), [2, 2], [2, 2], [0, 0, 0, 0], (-5, 5))]
    for i, (shape, k, s, pads, clamp) in enumerate(cases):
        node = Node("p", "maxpool2d", ["x"], "z", {"kernel": k, "stride": s, "pads": pads})
        x = rng.normal(0.0, 1.0, (8,) + shape).astype(np.float32)
        qm = quantized([node], shape, x)
        if clamp:
            qm.params["p"] = dataclasses.replace(qm.params["p"], lo=clamp[0], hi=clamp[1])
        check_both_paths(tmp_path / str(i), qm, x)


@settings_
@given(seed=st.integers(0, 10_000), c=st.integers(1, 6), h=st.integers(1, 5), w=st.integers(1, 7),
       log_gain=st.floats(-1.5, 1.5), x_scale=st.floats(0.05, 20.0), act=st.sampled_from(["none", "relu", "relu6"]),
       clamp=st.booleans(), tables=st.booleans())
def test_add_random_scales(tmp_path_factory, seed, c, h, w, log_gain, x_scale, act, clamp, tables):
    """With its rescaling tables, and without (computed per element, as a flash budget may choose)."""
    rng = np.random.default_rng(seed)
    x = (rng.normal(0.3, 1.0, (16, c, h, w)) * x_scale).astype(np.float32)
    qm = quantized(add_graph(rng, c, 10.0 ** log_gain, act), (c, h, w), x)
    if not tables:
        qm.meta["flash_budget"] = {"table_free_adds": ["add"]}
    if clamp:  # a fused activation narrower than int8
        lo, hi = sorted(int(v) for v in rng.integers(-128, 128, 2))
        qm.params["add"] = dataclasses.replace(qm.params["add"], act_min=lo, act_max=hi)
    check_both_paths(tmp_path_factory.mktemp("add"), qm, x)


def test_add_output_shifts_around_the_fast_path(tmp_path):
    """left_shift = 0, so the output multiplier can be large: out_shift 1 and 0 are outside the DSP
    fast path (out_shift in [-30, -1]) and take the generic loop, -1 is its edge (a 1-bit rounding
    shift). Every build must agree with the reference."""
    rng = np.random.default_rng(5)
    x = rng.normal(0.0, 1.0, (12, 3, 5, 5)).astype(np.float32)
    qm = quantized(add_graph(rng, 3, 1.0, "none"), (3, 5, 5), x)
    p = qm.params["add"]
    for real, shift in ((1.7, 1), (0.75, 0), (0.3, -1)):
        mo, so = quantize_multiplier(real)
        assert so == shift
        qm.params["add"] = dataclasses.replace(p, left_shift=0, out_mult=mo, out_shift=so)
        for tables in (True, False):
            qm.meta["flash_budget"] = {"table_free_adds": [] if tables else ["add"]}
            check_both_paths(tmp_path / f"{shift + 1}{tables}", qm, x)


def test_add_without_tables_input_shifts_outside_the_fast_path(tmp_path):
    """The computed add's DSP loop takes input shifts in [-30, 0] (0: no rounding shift, its own
    branch); a positive one takes the generic loop. Both agree with the reference."""
    rng = np.random.default_rng(9)
    x = rng.normal(0.0, 1.0, (12, 3, 4, 4)).astype(np.float32)
    qm = quantized(add_graph(rng, 3, 1.0, "none"), (3, 4, 4), x)
    qm.meta["flash_budget"] = {"table_free_adds": ["add"]}
    p = qm.params["add"]
    for real, shift in ((0.6, 0), (1.5, 1)):
        m, s = quantize_multiplier(real)
        assert s == shift
        qm.params["add"] = dataclasses.replace(p, left_shift=16, in1_mult=m, in1_shift=s)
        check_both_paths(tmp_path / str(shift), qm, x)


def test_add_without_tables_refuses_an_input_rescaling_that_overflows():
    """Computed per element, (x - zp) * 2^(left_shift + 1) must fit int32: left_shift 24 does not."""
    rng = np.random.default_rng(10)
    x = rng.normal(0.0, 1.0, (12, 2, 3, 3)).astype(np.float32)
    qm = quantized(add_graph(rng, 2, 1.0, "none"), (2, 3, 3), x)
    qm.meta["flash_budget"] = {"table_free_adds": ["add"]}
    qm.params["add"] = dataclasses.replace(qm.params["add"], left_shift=24)
    with pytest.raises(NupesError, match="input rescaling"):
        codegen.render(qm)


def test_table_free_adds_must_name_adds():
    rng = np.random.default_rng(11)
    x = rng.normal(0.0, 1.0, (12, 2, 3, 3)).astype(np.float32)
    qm = quantized(add_graph(rng, 2, 1.0, "none"), (2, 3, 3), x)
    qm.meta["flash_budget"] = {"table_free_adds": ["conv"]}
    with pytest.raises(NupesError, match="table_free_adds"):
        codegen.render(qm)


def test_add_tables_that_would_overflow_are_refused():
    """A crafted output shift makes 2 * (t1 + t2) * 2^out_shift overflow int32: codegen refuses it."""
    rng = np.random.default_rng(6)
    x = rng.normal(0.0, 1.0, (12, 2, 3, 3)).astype(np.float32)
    qm = quantized(add_graph(rng, 2, 1.0, "none"), (2, 3, 3), x)
    qm.params["add"] = dataclasses.replace(qm.params["add"], out_shift=12)
    with pytest.raises(NupesError, match="table sum"):
        codegen.render(qm)


def test_add_tables_reproduce_the_reference_for_every_input_pair():
    """The emitted tables reproduce the reference add for all 65536 input pairs."""
    from nupes_edge.intref.fixedpoint import multiply_by_quantized_multiplier as mbqm
    from nupes_edge.intref.reference import add

    rng = np.random.default_rng(7)
    x = rng.normal(0.0, 1.0, (12, 2, 3, 3)).astype(np.float32)
    qm = quantized(add_graph(rng, 2, 0.2, "none"), (2, 3, 3), x)
    p = qm.params["add"]
    data = codegen.render(qm)[1]["nupes_model_k_data.c"]
    tables = []
    for t in ("t1", "t2"):
        body = data.split(f"_{t}[256] = {{")[1].split("};")[0]
        tables.append(np.array([int(v) for v in body.replace("\n", " ").split(",") if v.strip()], np.int64))
    assert all(t.shape == (256,) for t in tables)
    # every pair of int8 inputs: the add as the C computes it from the tables, against the reference
    v = np.arange(-128, 128)
    a, b = np.meshgrid(v, v, indexing="ij")
    s = tables[0][a + 128] + tables[1][b + 128]
    out = np.clip(mbqm(s, p.out_mult, p.out_shift) + p.out_zp, p.act_min, p.act_max)
    np.testing.assert_array_equal(out, add(a, b, p))


def test_max_pool_then_add_sanitized(tmp_path):
    """Under AddressSanitizer / UBSan: the pool's word reads of the model input (a global array of
    exactly its size in the host runner; 7 channels, a padded window) stay inside it, and the add's
    fast path has no signed overflow."""
    rng = np.random.default_rng(8)
    x = rng.normal(0.3, 1.5, (10, 7, 5, 6)).astype(np.float32)
    pool = Node("p", "maxpool2d", ["x"], "y", {"kernel": [3, 3], "stride": [2, 2], "pads": [1, 1, 1, 1]})
    wt = (rng.normal(0, 1, (7, 7, 1, 1)) * 3.0).astype(np.float32)
    conv = Node("conv", "conv2d", ["y"], "w", {"stride": [1, 1], "pads": [0, 0, 0, 0], "groups": 1, "act": "none"},
                wt, rng.normal(0, 1, 7).astype(np.float32))
    nodes = [pool, conv, Node("add", "add", ["y", "w"], "z", {"act": "relu"})]
    qm = quantized(nodes, (7, 5, 6), x)
    check_both_paths(tmp_path / "tables", qm, x, sanitize=True)
    qm.meta["flash_budget"] = {"table_free_adds": ["add"]}  # and the computed add
    check_both_paths(tmp_path / "computed", qm, x, sanitize=True)


@pytest.mark.skipif(__import__("shutil").which("qemu-system-arm") is None, reason="make setup installs qemu-system-arm")
@pytest.mark.parametrize("c,h,w,shift,clamp", [(5, 3, 7, None, False), (16, 4, 4, None, True), (3, 5, 5, 1, False),
                                               (3, 5, 5, 0, True), (7, 1, 1, -1, False)])
def test_add_with_helium_on_the_emulated_m55(tmp_path, c, h, w, shift, clamp):
    """nupes_add's Helium loop (four elements a step: gathers from the two tables, the vector
    requantization, a narrowing store; the last n % 4 elements scalar): element counts that are and are
    not multiples of four, output shifts 1, 0, -1 and the calibrated one, a narrow clamp."""
    from tests.boardrun import run_on_board

    rng = np.random.default_rng(c * h * w)
    x = rng.normal(0.0, 1.0, (6, c, h, w)).astype(np.float32)
    qm = quantized(add_graph(rng, c, 1.0, "none"), (c, h, w), x)
    p = qm.params["add"]
    if shift is not None:
        mo, so = quantize_multiplier({1: 1.7, 0: 0.75, -1: 0.3}[shift])
        p = qm.params["add"] = dataclasses.replace(p, left_shift=0, out_mult=mo, out_shift=so)
    if clamp:
        qm.params["add"] = dataclasses.replace(p, act_min=-20, act_max=90)
    _, r = run_on_board(qm, x, tmp_path, "mps3-an547")
    assert "nupes_add(" in open(f"{tmp_path}/src/nupes_model_k.c").read()
    assert r.n == len(x) and r.mismatches == 0, r.first_diffs
