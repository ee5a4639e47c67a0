"""Lowering corner cases real trained models contain: a channel of all-zero weights, a huge bias,
weights of 1e-12, a constant input channel. Like TFLite's converter, the weight scale is floored
so every bias fits int32 (docs/numerics.md); the result runs bit-exact in C."""
import numpy as np
import pytest

from nupes_edge.build import build_host, run_host
from nupes_edge.ir import Graph, Node, infer_shapes
from nupes_edge.layout import from_device
from nupes_edge.quant.driver import quantize_graph
from nupes_edge.quant.lower import BIAS_LIMIT
from nupes_edge.quant.reconstruct import ReconConfig
from nupes_edge.verify import reference_io


def corner_graph():
    rng = np.random.default_rng(0)
    conv = lambda name, src, dst, w, b: Node(name, "conv2d", [src], dst, {"stride": [1, 1], "pads": [1, 1, 1, 1] if w.shape[-1] == 3 else [0, 0, 0, 0], "groups": 1, "act": "relu"}, w, b)  # noqa: E731
    w1 = rng.normal(0, 0.3, (4, 3, 3, 3)).astype(np.float32)
    w1[0] = 0.0  # a dead channel with a bias: its weight scale is 0
    b1 = np.array([0.5, 0.1, -0.1, 0.0], np.float32)
    w2 = rng.normal(0, 0.3, (4, 4, 1, 1)).astype(np.float32)
    b2 = np.array([0.0, 1e6, 0.2, -0.2], np.float32)  # a huge bias
    w3 = np.full((3, 4), 1e-12, np.float32)  # vanishing weights
    nodes = [conv("c1", "x", "y1", w1, b1), conv("c2", "y1", "y2", w2, b2),
             Node("gap", "global_avgpool", ["y2"], "g", {}), Node("flat", "flatten", ["g"], "f", {}),
             Node("fc", "linear", ["f"], "out", {"act": "none"}, w3, np.array([0.3, -0.3, 0.1], np.float32))]
    g = Graph("x", (3, 6, 6), "out", nodes)
    infer_shapes(g)
    x = rng.normal(0, 1, (64, 3, 6, 6)).astype(np.float32)
    x[:, 1] = 0.7  # a constant input channel
    return g, x


@pytest.mark.parametrize("method,bits", [("uniform", 8), ("powerquant", 4), ("nupes", 3)])
def test_corner_cases_quantize_and_run_bit_exact(method, bits, tmp_path):
    g, x = corner_graph()
    qm = quantize_graph(g, x, method, bits, name="corners", recon=ReconConfig(iters=40, batch=16))
    for name in ("c1", "c2", "fc"):
        p = qm.params[name]
        assert np.abs(p.bias.astype(np.int64)).max() <= BIAS_LIMIT and p.acc_bound.max() <= 2**31 - 1
    # the weights the model keeps are the ones lowered (scales floored), so fake-quant = integer model
    lw = qm.weights["c2"]
    s_w = lw.alpha / (((1 << (bits - 1)) - 1) * 2.0 ** qm.params["c2"].G)
    assert 1e6 / (qm.act["y1"].scale * s_w[1]) <= BIAS_LIMIT * (1 + 1e-6)
    dev_in, ref = reference_io(qm, x[:16])
    hb = build_host(qm, str(tmp_path / "host"), sanitize=True)
    np.testing.assert_array_equal(from_device(run_host(hb.runner, dev_in), qm.graph.output_shape), ref)


def test_an_unexpected_lowering_failure_names_the_layer(monkeypatch):
    from nupes_edge.quant import lower

    g, x = corner_graph()
    monkeypatch.setattr(lower, "make_lut", lambda *a: (_ for _ in ()).throw(ZeroDivisionError("boom")))
    with pytest.raises(RuntimeError, match="lowering layer 'c1' \\(conv2d\\) failed: ZeroDivisionError: boom"):
        quantize_graph(g, x, "powerquant", 4, name="corners")
