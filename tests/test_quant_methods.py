import numpy as np
import pytest

from nupes_edge.errors import NupesError
from nupes_edge.quant import METHODS
from nupes_edge.quant.driver import quantize_graph
from nupes_edge.quant.power import qmax


@pytest.mark.parametrize("method", METHODS)
def test_every_method_produces_valid_codes_and_is_deterministic(digits_graph, digits_calib, fast_recon, method):
    a = quantize_graph(digits_graph, digits_calib, method, 3, recon=fast_recon)
    b = quantize_graph(digits_graph, digits_calib, method, 3, recon=fast_recon)
    for name, lw in a.weights.items():
        assert np.abs(lw.codes).max() <= qmax(3)
        np.testing.assert_array_equal(lw.codes, b.weights[name].codes)
        assert lw.a == b.weights[name].a
        if method in ("uniform", "uniform-mse", "adaround"):
            assert lw.a == 1.0


def test_nupes_codes_move_over_the_whole_grid_where_adaround_cannot():
    """A layer whose target needs the weights halved: AdaRound can only pick floor or ceil of the
    initial codes, NUPES codes travel as far as needed."""
    import torch

    from nupes_edge.ir import Node
    from nupes_edge.quant import reconstruct
    from nupes_edge.quant.power import decode

    rng = np.random.default_rng(0)
    w0 = rng.uniform(-1, 1, (8, 32)).astype(np.float32)
    w0[:, 0] = 1.0  # fixes alpha = 1 for both methods' initial grids
    node = Node("fc", "linear", ["x"], "y", {"act": "none"}, w0, np.zeros(8, np.float32))
    x = torch.from_numpy(rng.standard_normal((512, 32)).astype(np.float32))
    y = x @ torch.from_numpy(0.5 * w0).T
    cfg = reconstruct.ReconConfig(iters=600, batch=128, lr_alpha=0.0, lr_bias=0.0)
    errors = {}
    for method, cls in (("adaround", reconstruct._AdaRound), ("nupes", reconstruct._Nupes)):
        learner = cls(torch.from_numpy(w0), torch.from_numpy(node.bias), 6)
        init = learner.result().codes.astype(int)
        reconstruct._fit_layer(node, learner, x, y, cfg)
        lw = learner.result()
        errors[method] = float(((decode(lw.codes, lw.alpha, lw.a, 6) - 0.5 * w0) ** 2).mean())
        moved = np.abs(lw.codes.astype(int) - init).max()
        assert moved <= 1 if method == "adaround" else moved >= 2, (method, moved)
    assert errors["nupes"] < 0.5 * errors["adaround"]


def test_per_layer_bits_override(digits_graph, digits_calib):
    first = digits_graph.weight_nodes()[0].name
    qm = quantize_graph(digits_graph, digits_calib, "uniform", 4, overrides={first: 8})
    assert qm.params[first].bits == 8
    assert all(p.bits == 4 for n, p in qm.params.items() if hasattr(p, "bits") and n != first)
    with pytest.raises(NupesError, match="no weight layer named 'nope'"):
        quantize_graph(digits_graph, digits_calib, "uniform", 4, overrides={"nope": 8})
    with pytest.raises(NupesError, match="2..8"):
        quantize_graph(digits_graph, digits_calib, "uniform", 9)


def test_calibration_data_of_the_wrong_shape_is_refused(digits_graph):
    with pytest.raises(NupesError, match="calibration data has shape"):
        quantize_graph(digits_graph, np.zeros((4, 1, 9, 9), np.float32), "uniform", 4)


def test_a_bias_no_table_shift_can_hold_gets_its_scale_floored_like_tflite():
    """A (near-)zero channel with a large bias: its weight scale is raised until the int32 bias fits
    (was: refused), its codes become 0, and the integer model outputs that bias."""
    from nupes_edge.evaluate import int_logits
    from nupes_edge.intref import dequantize_output
    from nupes_edge.ir import Graph, Node, infer_shapes
    from nupes_edge.quant.driver import quantize_graph
    from nupes_edge.quant.lower import BIAS_LIMIT

    rng = np.random.default_rng(0)
    w = rng.normal(0, 1, (4, 8)).astype(np.float32)
    w[1] = 1e-12  # a (near-)zero channel with a large bias: its weight scale makes the int32 bias overflow
    g = Graph("x", (8,), "y", [Node("fc", "linear", ["x"], "y", {"act": "none"}, w,
                                    np.array([0.1, 1e6, 0.2, 0.3], np.float32))])
    infer_shapes(g)
    x = rng.normal(0, 1, (16, 8)).astype(np.float32)
    qm = quantize_graph(g, x, "uniform", 8, name="k")
    p = qm.params["fc"]
    assert np.abs(p.bias.astype(np.int64)).max() <= BIAS_LIMIT and not qm.weights["fc"].codes[1].any()
    y = dequantize_output(int_logits(qm, x), qm.output_q.scale, qm.output_q.zero_point)
    np.testing.assert_allclose(y[:, 1], 1e6, rtol=0.01)
