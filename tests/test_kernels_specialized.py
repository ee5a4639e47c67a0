"""The specialized kernels codegen/plan.py chooses from the shapes (nupes_conv2d_window, _1x1, the
DSP conv path with the folded zero point, nupes_fully_connected_s8 / _pairs), each on random
shapes it accepts, on both paths, against the integer reference; and that the plan picks them."""
import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nupes_edge import codegen
from nupes_edge.ir import Graph, Node, infer_shapes
from nupes_edge.quant.driver import quantize_graph
from tests.test_kernels import conv_node, run_single

settings_ = settings(max_examples=10, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])


def kernels_of(node, in_shape, method, bits):
    g = Graph("x", tuple(in_shape), node.output, [node])
    infer_shapes(g)
    x = np.random.default_rng(0).normal(0.3, 1.0, (8,) + tuple(in_shape)).astype(np.float32)
    return [s.op for s in codegen.plan(quantize_graph(g, x, method, bits, name="k")).steps]


@settings_
@given(seed=st.integers(0, 10_000), c_in=st.integers(1, 4), c_out=st.integers(1, 37), k=st.integers(1, 4),
       h=st.integers(4, 9), stride=st.integers(1, 2), bits=st.sampled_from([2, 4, 8]), dsp=st.booleans())
def test_few_input_channels_conv(tmp_path_factory, seed, c_in, c_out, k, h, stride, bits, dsp):
    """nupes_conv2d_window: chunks of 16 output channels, odd counts, padding on every side."""
    rng = np.random.default_rng(seed)
    pad = [int(v) for v in rng.integers(0, k, 4)]
    node = conv_node(rng, c_in, c_out, (k, k), (stride, stride), pad, False)
    pointwise = k == 1 and stride == 1 and not any(pad) and c_in % 4 == 0
    assert kernels_of(node, (c_in, h, h + 2), "uniform", bits) == ["nupes_conv2d_1x1" if pointwise else "nupes_conv2d_window"]
    run_single(tmp_path_factory.mktemp("win"), node, (c_in, h, h + 2), "powerquant", bits, seed, dsp)


@settings_
@given(seed=st.integers(0, 10_000), c_in=st.sampled_from([3, 4, 8, 12]), c_out=st.integers(1, 7), h=st.integers(1, 6),
       bits=st.sampled_from([2, 4, 8]), dsp=st.booleans())
def test_pointwise_conv(tmp_path_factory, seed, c_in, c_out, h, bits, dsp):
    rng = np.random.default_rng(seed)
    node = conv_node(rng, c_in, c_out, (1, 1), (1, 1), [0, 0, 0, 0], False, "none")
    # whole DSP groups: uniform 2/4/8-bit weights take the im2col kernel (widened pixels shared by
    # every channel), others nupes_conv2d_1x1; four or fewer channels the window kernel / 1x1
    im2col = {2: "nupes_conv2d_im2col_p2", 4: "nupes_conv2d_im2col_p4", 8: "nupes_conv2d_im2col_s8"}[bits]
    expected = im2col if c_in > 4 and c_in % 4 == 0 else "nupes_conv2d_1x1" if c_in == 4 else "nupes_conv2d_window"
    assert kernels_of(node, (c_in, h, h + 1), "uniform", bits) == [expected]
    if c_in % 4 == 0:
        assert kernels_of(node, (c_in, h, h + 1), "powerquant", 8) == ["nupes_conv2d_1x1"]
        assert kernels_of(node, (c_in, h, h + 1), "uniform", 5) == ["nupes_conv2d_1x1"]
    method = "powerquant" if bits != 8 or seed % 2 else "uniform"  # 8 bits: nupes_conv2d_1x1 or im2col
    run_single(tmp_path_factory.mktemp("pw"), node, (c_in, h, h + 1), method, bits, seed, dsp)


@settings_
@given(seed=st.integers(0, 10_000), c_in=st.sampled_from([4, 8]), c_out=st.integers(1, 5), kh=st.integers(1, 4),
       kw=st.integers(1, 4), w=st.integers(4, 10), stride=st.sampled_from([(1, 1), (2, 2), (1, 2)]),
       bits=st.sampled_from([2, 4, 8]), dsp=st.booleans())
def test_conv_with_folded_zero_point_at_every_border(tmp_path_factory, seed, c_in, c_out, kh, kw, w, stride, bits, dsp):
    """c_in % 4 == 0 takes the DSP path that folds zp into tap sums: padding on every side."""
    rng = np.random.default_rng(seed)
    pad = [int(rng.integers(0, kh)), int(rng.integers(0, kw)), int(rng.integers(0, kh)), int(rng.integers(0, kw))]
    node = conv_node(rng, c_in, c_out, (kh, kw), stride, pad, False)
    shape = (c_in, int(rng.integers(4, 8)), w)  # at least the kernel, whatever the padding
    run_single(tmp_path_factory.mktemp("cz"), node, shape, "powerquant", bits, seed, dsp)


@settings_
@given(seed=st.integers(0, 10_000), k=st.integers(1, 70), out=st.integers(1, 7),
       cfg=st.sampled_from([("uniform", 8, "nupes_fully_connected_s8"), ("uniform", 4, "nupes_fully_connected_p4"),
                            ("powerquant", 4, "nupes_fully_connected_p4"), ("powerquant", 2, "nupes_fully_connected_p2"),
                            ("powerquant", 3, "nupes_fully_connected"), ("powerquant", 8, "nupes_fully_connected")]),
       dsp=st.booleans())
def test_dense_kernels(tmp_path_factory, seed, k, out, cfg, dsp):
    method, bits, kernel = cfg
    rng = np.random.default_rng(seed)
    node = Node("fc", "linear", ["x"], "y", {"act": "none"}, rng.normal(0, 1, (out, k)).astype(np.float32),
                rng.normal(0, 0.5, out).astype(np.float32))
    if method == "uniform" or bits == 2:
        assert kernels_of(node, (k,), method, bits) == [kernel]
    run_single(tmp_path_factory.mktemp("fc"), node, (k,), method, bits, seed, dsp)


def test_specialized_kernels_under_the_sanitizers(tmp_path):
    from nupes_edge.build import build_host, run_host
    from nupes_edge.layout import from_device
    from nupes_edge.verify import reference_io

    rng = np.random.default_rng(3)
    cases = [(conv_node(rng, 1, 5, (3, 3), (1, 1), [1, 1, 1, 1], False), (1, 7, 6), "powerquant", 4),
             (conv_node(rng, 8, 3, (1, 1), (1, 1), [0, 0, 0, 0], False), (8, 5, 5), "uniform", 8),
             (conv_node(rng, 8, 5, (3, 3), (2, 1), [1, 1, 0, 2], False), (8, 6, 7), "powerquant", 2),
             (Node("fc", "linear", ["x"], "y", {"act": "relu"}, rng.normal(0, 1, (5, 37)).astype(np.float32),
                   rng.normal(0, 1, 5).astype(np.float32)), (37,), "powerquant", 4),
             (Node("fc", "linear", ["x"], "y", {"act": "relu"}, rng.normal(0, 1, (5, 37)).astype(np.float32),
                   rng.normal(0, 1, 5).astype(np.float32)), (37,), "uniform", 8)]
    for i, (node, shape, method, bits) in enumerate(cases):
        g = Graph("x", shape, node.output, [node])
        infer_shapes(g)
        x = rng.normal(0.3, 1.0, (16,) + shape).astype(np.float32)
        qm = quantize_graph(g, x, method, bits, name="k")
        dev_in, ref = reference_io(qm, x)
        for dsp in (False, True):
            hb = build_host(qm, str(tmp_path / f"{i}{dsp}"), sanitize=True, dsp=dsp)
            np.testing.assert_array_equal(from_device(run_host(hb.runner, dev_in), g.output_shape), ref)
