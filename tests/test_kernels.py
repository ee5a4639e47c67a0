"""Each kernel alone, on random and edge shapes, against the integer reference (hypothesis)."""
import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nupes_edge.build import build_host, run_host
from nupes_edge.ir import Graph, Node, infer_shapes
from nupes_edge.quant.driver import quantize_graph
from nupes_edge.verify import reference_io


def run_single(tmp_path, node: Node, in_shape, method, bits, seed, dsp, n=24):
    rng = np.random.default_rng(seed)
    g = Graph("x", tuple(in_shape), node.output, [node])
    infer_shapes(g)
    x = rng.normal(0.3, 1.0, (n,) + tuple(in_shape)).astype(np.float32)
    qm = quantize_graph(g, x, method, bits, name="k")
    dev_in, ref = reference_io(qm, x)
    hb = build_host(qm, str(tmp_path), dsp=dsp)
    out = run_host(hb.runner, dev_in)
    from nupes_edge.layout import from_device

    np.testing.assert_array_equal(from_device(out, g.output_shape), ref)


def conv_node(rng, c_in, c_out, k, stride, pad, depthwise, act="relu"):
    groups = c_in if depthwise else 1
    w = rng.normal(0, 1, (c_out, c_in // groups, k[0], k[1])).astype(np.float32)
    b = rng.normal(0, 0.5, c_out).astype(np.float32)
    return Node("conv", "conv2d", ["x"], "y", {"stride": list(stride), "pads": list(pad), "groups": groups, "act": act}, w, b)


settings_ = settings(max_examples=12, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])


@settings_
@given(seed=st.integers(0, 10_000), c_in=st.integers(1, 9), c_out=st.integers(1, 6), kh=st.integers(1, 4),
       kw=st.integers(1, 4), h=st.integers(4, 9), w=st.integers(4, 9), stride=st.sampled_from([(1, 1), (2, 2), (2, 1)]),
       bits=st.integers(2, 8), method=st.sampled_from(["uniform", "powerquant"]), dsp=st.booleans(),
       act=st.sampled_from(["none", "relu", "relu6"]))
def test_conv2d_random_shapes(tmp_path_factory, seed, c_in, c_out, kh, kw, h, w, stride, bits, method, dsp, act):
    rng = np.random.default_rng(seed)
    pad = (rng.integers(0, kh), rng.integers(0, kw), rng.integers(0, kh), rng.integers(0, kw))
    node = conv_node(rng, c_in, c_out, (kh, kw), stride, [int(p) for p in pad], False, act)
    run_single(tmp_path_factory.mktemp("k"), node, (c_in, h, w), method, bits, seed, dsp)


@settings_
@given(seed=st.integers(0, 10_000), c=st.integers(1, 8), mult=st.integers(1, 3), k=st.integers(1, 5),
       h=st.integers(3, 9), stride=st.integers(1, 2), bits=st.integers(2, 8), dsp=st.booleans())
def test_depthwise_random_shapes(tmp_path_factory, seed, c, mult, k, h, stride, bits, dsp):
    rng = np.random.default_rng(seed)
    node = conv_node(rng, c, c * mult, (k, k), (stride, stride), [k // 2] * 4, True)
    run_single(tmp_path_factory.mktemp("k"), node, (c, h, h + 1), "powerquant", bits, seed, dsp)


def test_edge_shapes(tmp_path):
    rng = np.random.default_rng(0)
    cases = [
        (conv_node(rng, 5, 7, (1, 1), (1, 1), [0, 0, 0, 0], False), (5, 6, 6)),   # 1×1 conv
        (conv_node(rng, 3, 4, (3, 3), (2, 2), [1, 1, 1, 1], False), (3, 7, 9)),   # stride 2, odd sizes
        (conv_node(rng, 1, 1, (3, 3), (1, 1), [1, 1, 1, 1], False), (1, 5, 5)),   # a single channel
        (conv_node(rng, 1, 1, (3, 3), (2, 2), [0, 0, 0, 0], True), (1, 7, 7)),    # single-channel depthwise
    ]
    for i, (node, shape) in enumerate(cases):
        for dsp in (False, True):
            run_single(tmp_path / f"{i}{dsp}", node, shape, "powerquant", 4, i, dsp)


def test_dense_with_a_fan_in_that_stresses_the_overflow_bound(tmp_path):
    """K = 6000 at 8 bits with a ≠ 1: the full-scale table (G = 8) could overflow int32, so the
    code generator must have picked a smaller G, and the C must still agree bit for bit."""
    rng = np.random.default_rng(1)
    k = 6000
    w = rng.laplace(0, 1, (6, k)).astype(np.float32)
    node = Node("fc", "linear", ["x"], "y", {"act": "none"}, w, rng.normal(0, 1, 6).astype(np.float32))
    g = Graph("x", (k,), "y", [node])
    infer_shapes(g)
    x = rng.uniform(-1, 1, (16, k)).astype(np.float32)
    qm = quantize_graph(g, x, "powerquant", 8, name="k")
    p = qm.params["fc"]
    assert p.a != 1.0 and p.G < 8 and p.acc_bound.max() <= 2**31 - 1
    dev_in, ref = reference_io(qm, x)
    for dsp in (False, True):
        hb = build_host(qm, str(tmp_path / str(dsp)), dsp=dsp)
        np.testing.assert_array_equal(run_host(hb.runner, dev_in).reshape(ref.shape), ref)


@settings_
@given(seed=st.integers(0, 10_000), c=st.integers(1, 6), h=st.integers(2, 8), k=st.integers(1, 3),
       op=st.sampled_from(["maxpool2d", "avgpool2d", "global_avgpool", "add", "relu6"]))
def test_pools_add_and_clamp(tmp_path_factory, seed, c, h, k, op):
    rng = np.random.default_rng(seed)
    k = min(k, h)
    if op == "add":
        conv = conv_node(rng, c, c, (1, 1), (1, 1), [0, 0, 0, 0], False, "none")
        nodes = [conv, Node("add", "add", ["x", "y"], "z", {"act": "relu"})]
    elif op == "global_avgpool":
        nodes = [Node("p", op, ["x"], "z")]
    elif op == "relu6":
        nodes = [Node("p", op, ["x"], "z")]
    else:
        pad = k // 2 if op == "maxpool2d" else 0
        nodes = [Node("p", op, ["x"], "z", {"kernel": [k, k], "stride": [k, k], "pads": [pad] * 4})]
    g = Graph("x", (c, h, h), "z", nodes)
    infer_shapes(g)
    x = rng.normal(0.5, 2.0, (20, c, h, h)).astype(np.float32)
    qm = quantize_graph(g, x, "uniform", 8, name="k")
    dev_in, ref = reference_io(qm, x)
    hb = build_host(qm, str(tmp_path_factory.mktemp("p")))
    from nupes_edge.layout import from_device

    np.testing.assert_array_equal(from_device(run_host(hb.runner, dev_in), g.output_shape), ref)
