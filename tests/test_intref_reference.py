"""The integer reference against the fake-quant model, and its overflow guarantees.

Stated bound (docs/numerics.md): fed the same int8 input, every node's int8 output is within
1 LSB of the fake-quant float computation rounded to int8 (the only differences are the int32
rounding of the bias and the fixed-point requantization). End to end, differences can cascade,
so there we require the top-1 decisions to agree on at least 98% of the test inputs.
"""
import numpy as np
import pytest
import torch

from nupes_edge import torch_exec
from nupes_edge.intparams import IntLayer
from nupes_edge.intref import quantize_input, run_int
from nupes_edge.intref.reference import linear as int_linear
from nupes_edge.ir import Graph, Node, infer_shapes
from nupes_edge.quant.driver import quantize_graph
from nupes_edge.quant.lower import lower_layer
from nupes_edge.quant.power import round_half_away
from nupes_edge.quant.types import ActQuant, LayerWeights


@pytest.mark.parametrize("method,bits", [("uniform", 8), ("uniform", 4), ("powerquant", 4), ("powerquant", 3),
                                         ("nupes", 4), ("nupes", 2), ("adaround", 3)])
def test_every_node_is_within_one_lsb_of_fake_quant(digits_graph, digits_calib, digits_test, fast_recon, method, bits):
    qm = quantize_graph(digits_graph, digits_calib, method, bits, recon=fast_recon)
    x = digits_test[0][:200]
    rec = {}
    xq = quantize_input(x, qm.input_q.scale, qm.input_q.zero_point)
    run_int(qm, xq, record=rec.__setitem__)
    rec[digits_graph.input_name] = xq.astype(np.int64)
    weights = qm.fq_weights()
    for node in digits_graph.nodes:
        ins = [torch.from_numpy(((rec[i] - qm.act[i].zero_point) * qm.act[i].scale).astype(np.float32)) for i in node.inputs]
        w, b = weights.get(node.name, (None, None))
        with torch.no_grad():
            f = torch_exec.node_forward(node, ins, w, b).numpy().astype(np.float64)
        o = qm.act[node.output]
        want = np.clip(round_half_away(f / o.scale) + o.zero_point, -128, 127)
        diff = np.abs(rec[node.output] - want)
        assert diff.max() <= 1, f"{node.name}: {diff.max()} LSB from fake-quant"


@pytest.mark.parametrize("method,bits", [("uniform", 8), ("powerquant", 4), ("nupes", 3)])
def test_end_to_end_decisions_agree_with_fake_quant(digits_graph, digits_calib, digits_test, fast_recon, method, bits):
    qm = quantize_graph(digits_graph, digits_calib, method, bits, recon=fast_recon)
    x = digits_test[0]
    fq = torch_exec.run_numpy(digits_graph, x, weights=qm.fq_weights(), act_q=qm.act_q())
    iq = run_int(qm, quantize_input(x, qm.input_q.scale, qm.input_q.zero_point))
    assert (fq.argmax(1) == iq.argmax(1)).mean() >= 0.98


def test_uniform_layers_use_the_identity_table(digits_graph, digits_calib):
    qm = quantize_graph(digits_graph, digits_calib, "uniform", 8)
    for p in qm.params.values():
        if isinstance(p, IntLayer):
            assert p.G == 0 and p.a == 1.0
            np.testing.assert_array_equal(p.lut, np.arange(128))


def _wide_linear(k: int, a: float, bits: int = 8):
    rng = np.random.default_rng(0)
    w = rng.standard_normal((4, k)).astype(np.float32)
    node = Node("fc", "linear", ["x"], "y", {"act": "none"}, w, np.zeros(4, np.float32))
    alpha = np.abs(w).max(axis=1).astype(np.float64)
    q = (1 << (bits - 1)) - 1
    codes = np.full(w.shape, q, np.int8)  # worst case: every weight at full scale
    return node, LayerWeights(bits, a, alpha, codes)


def test_table_shift_shrinks_until_the_accumulator_cannot_overflow():
    node, lw = _wide_linear(40_000, a=0.5)
    p = lower_layer(node, lw, ActQuant(0.02, -128), ActQuant(0.1, 0))
    assert p.acc_bound.max() <= 2**31 - 1
    assert p.G < 8  # the full-scale G = 8 would overflow: 40000 · 127·2^8 · 255 > 2^31
    assert 40_000 * int(p.lut[-1]) * 255 <= 2**31 - 1
    # and the reference really computes the worst case without leaving int32
    xq = np.full((1, 40_000), 127, np.int64)
    acc_out = int_linear(xq, node, p)
    assert acc_out.shape == (1, 4)


def test_reference_refuses_an_accumulator_beyond_its_proof():
    node, lw = _wide_linear(16, a=1.0)
    p = lower_layer(node, lw, ActQuant(0.02, 0), ActQuant(0.1, 0))
    p.acc_bound = np.ones_like(p.acc_bound)  # a (wrong) tighter claim must be caught
    with pytest.raises(AssertionError, match="fc"):
        int_linear(np.full((1, 16), 100, np.int64), node, p)


def test_an_unsatisfiable_bound_is_a_clear_error():
    from nupes_edge.errors import NupesError

    node, lw = _wide_linear(80_000, a=1.0)  # 80000 · 127 · 255 > 2^31 even at G = 0
    with pytest.raises(NupesError, match="fc.*overflow"):
        lower_layer(node, lw, ActQuant(0.02, -128), ActQuant(0.1, 0))


def test_max_and_average_pool_round_like_tflite():
    g = Graph("x", (1, 2, 2), "p", [Node("p", "avgpool2d", ["x"], "p", {"kernel": [2, 2], "stride": [2, 2], "pads": [0, 0, 0, 0]})])
    infer_shapes(g)
    from nupes_edge.intref.reference import avgpool2d
    from nupes_edge.intparams import IntClamp

    x = np.array([[[[1, 2], [2, 1]]], [[[-1, -2], [-2, -1]]], [[[1, 1], [1, 2]]]], np.int64)  # sums 6, -6, 5
    out = avgpool2d(x, g.nodes[0], IntClamp(-128, 127)).ravel()
    np.testing.assert_array_equal(out, [2, -2, 1])  # 1.5 → 2, -1.5 → -2, 1.25 → 1
