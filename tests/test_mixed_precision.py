"""--flash-budget: per-layer weight bits chosen so the model's flash fits (nupes_edge/quant/mixed.py)."""
import itertools
import json

import numpy as np
import pytest

from nupes_edge.codegen.plan import ADD_TABLE_BYTES, layer_flash_bytes, plan
from nupes_edge.errors import NupesError
from nupes_edge.quant import mixed
from nupes_edge.quant.driver import quantize_graph

from .test_cli import cli


def model_flash(qm) -> int:
    r = plan(qm).report
    return r["flash_weights_bytes"] + r["flash_tables_bytes"] + r["flash_meta_bytes"]


def test_parse_size():
    assert mixed.parse_size("24576") == 24576
    assert mixed.parse_size("24K") == mixed.parse_size("24 KB") == mixed.parse_size("24kib") == 24576
    assert mixed.parse_size("1.5M") == 1536 * 1024
    for bad in ("24 GB", "0", "-3K", "K", "twelve", ""):
        with pytest.raises(ValueError):
            mixed.parse_size(bad)


@pytest.mark.parametrize("method,layer_bits", [
    ("powerquant", {"conv2d": 2, "conv2d_1": 3, "conv2d_2": 5, "conv2d_3": 7, "linear": 4}),
    ("powerquant", {"conv2d": 8, "conv2d_1": 6, "conv2d_2": 4, "conv2d_3": 2, "linear": 2}),
    ("uniform", {"conv2d": 4, "conv2d_1": 4, "conv2d_2": 3, "conv2d_3": 5, "linear": 8}),
    ("powerquant", {"conv2d": 5, "conv2d_1": 5, "conv2d_2": 5, "conv2d_3": 5, "linear": 8}),
])
def test_layer_costs_are_the_bytes_codegen_counts(digits_graph, digits_calib, method, layer_bits):
    """The cost the search plans with, layer by layer, adds up to codegen's report exactly, with
    the add's tables and without them."""
    qm = quantize_graph(digits_graph, digits_calib[:64], method, 4, layer_bits, name="digits")
    costs = mixed.flash_costs(digits_graph, method, {n: (b,) for n, b in layer_bits.items()})
    planned = sum(costs[n][b] for n, b in layer_bits.items())
    assert model_flash(qm) == planned + ADD_TABLE_BYTES
    qm.meta["flash_budget"] = {"table_free_adds": ["add"]}
    assert model_flash(qm) == planned


def test_a_uniform_8_bit_dense_layer_stores_no_table():
    shape = (10, 128)
    assert layer_flash_bytes("linear", shape, 8, table_free=True) == 10 * 128 + 1 + 10 * 12
    assert layer_flash_bytes("linear", shape, 8) == 10 * 128 + 1 + 512 + 10 * 12


def test_allocation_is_the_exact_optimum():
    """Against brute force over every combination, on random costs and errors."""
    rng = np.random.default_rng(0)
    for trial in range(30):
        names = [f"l{i}" for i in range(int(rng.integers(1, 5)))]
        costs = {n: {b: int(rng.integers(1, 60)) for b in range(2, 2 + int(rng.integers(1, 5)))} for n in names}
        errors = {n: {b: float(rng.random()) for b in costs[n]} for n in names}
        lo = sum(min(c.values()) for c in costs.values())
        hi = sum(max(c.values()) for c in costs.values())
        budget = int(rng.integers(lo, hi + 10))
        best = min((sum(errors[n][b] for n, b in zip(names, combo)), combo)
                   for combo in itertools.product(*(sorted(costs[n]) for n in names))
                   if sum(costs[n][b] for n, b in zip(names, combo)) <= budget)
        got = mixed.allocate(costs, errors, budget)
        assert sum(costs[n][b] for n, b in got.items()) <= budget
        assert sum(errors[n][b] for n, b in got.items()) == pytest.approx(best[0], abs=1e-12), trial
    with pytest.raises(NupesError, match="cheapest"):
        mixed.allocate({"a": {2: 10}}, {"a": {2: 0.0}}, 9)


def test_budgets_are_met_and_more_budget_plans_less_error(digits_graph, digits_calib):
    """At budgets from the smallest model to the largest, the model fits as codegen counts it, the
    planned error never rises with the budget, and the metadata records the choice."""
    costs = mixed.flash_costs(digits_graph, "powerquant", mixed.layer_options(digits_graph, {}))
    lo, hi = mixed.size_range(digits_graph, costs)
    planned = []
    for budget in (lo, lo + 700, 4869, 6000, 7549, hi - 1, hi):
        qm = quantize_graph(digits_graph, digits_calib, "powerquant", 4, name="digits", flash_budget=budget)
        fb = qm.meta["flash_budget"]
        assert model_flash(qm) <= budget and model_flash(qm) == fb["flash_bytes"], budget
        assert {n: p.bits for n, p in qm.params.items() if hasattr(p, "bits")} == fb["bits"]
        if budget < hi:
            planned.append(sum(fb["sensitivity"][n][str(b)] for n, b in fb["bits"].items()))
            assert set(fb["sensitivity"]) == set(fb["bits"]) and all(len(v) == 7 for v in fb["sensitivity"].values())
    assert planned == sorted(planned, reverse=True)
    assert all(b == 8 for b in fb["bits"].values()) and fb["table_free_adds"] == []  # the largest: all 8-bit


def test_the_smallest_budget_drops_the_add_tables_and_the_board_path_is_exact(digits_graph, digits_calib, tmp_path):
    """At the size of uniform W2, the search buys wider layers with the add's 2 KB of tables; the
    mixed-width model with a computed add stays bit-exact on the host build (the emulated board
    runs it in test_device_qemu.py)."""
    from nupes_edge.build import build_host, run_host
    from nupes_edge.layout import from_device
    from nupes_edge.verify import reference_io

    w2 = mixed.flash_costs(digits_graph, "powerquant", {n.name: (2,) for n in digits_graph.weight_nodes()})
    budget = sum(c[2] for c in w2.values()) + ADD_TABLE_BYTES
    qm = quantize_graph(digits_graph, digits_calib, "powerquant", 4, name="digits", flash_budget=budget)
    fb = qm.meta["flash_budget"]
    assert fb["table_free_adds"] == ["add"] and max(fb["bits"].values()) > 2
    assert model_flash(qm) <= budget
    x = digits_calib[:16]
    dev_in, ref = reference_io(qm, x)
    for dsp in (False, True):
        hb = build_host(qm, str(tmp_path / f"dsp{int(dsp)}"), dsp=dsp, sanitize=dsp)
        np.testing.assert_array_equal(from_device(run_host(hb.runner, dev_in), qm.graph.output_shape), ref)


def test_pinned_layers_keep_their_bits(digits_graph, digits_calib):
    costs = mixed.flash_costs(digits_graph, "powerquant", mixed.layer_options(digits_graph, {}))
    lo, hi = mixed.size_range(digits_graph, costs)
    qm = quantize_graph(digits_graph, digits_calib, "powerquant", 4, {"linear": 8}, name="digits",
                        flash_budget=(lo + hi) // 2)
    assert qm.params["linear"].bits == 8 and qm.meta["flash_budget"]["bits"]["linear"] == 8
    assert model_flash(qm) <= (lo + hi) // 2
    smallest = lo - costs["linear"][2] + costs["linear"][8]
    with pytest.raises(NupesError, match=rf"pinned layers \(linear=8\): {smallest:,} B"):
        quantize_graph(digits_graph, digits_calib, "powerquant", 4, {"linear": 8}, name="digits", flash_budget=lo)


def test_cli_refuses_a_budget_below_the_smallest_model_before_any_work(tmp_path):
    out = tmp_path / "m.nq"
    r = cli("quantize", "digits", "--data", "digits", "--flash-budget", "1K", "-o", str(out))
    assert r.returncode == 2 and not out.exists()
    assert "flash budget 1,024 B is below the smallest model: 2,821 B" in r.stderr
    assert "calibrating" not in r.stderr and "sensitivities" not in r.stderr and "Traceback" not in r.stderr
    r = cli("quantize", "digits", "--data", "digits", "--flash-budget", "12 GB", "-o", str(out))
    assert r.returncode == 2 and "--flash-budget" in r.stderr and "K/KB/KiB" in r.stderr


def test_cli_flash_budget_json_and_codegen_agree(tmp_path):
    out = tmp_path / "m.nq"
    r = cli("quantize", "digits", "--data", "digits", "--method", "powerquant", "--flash-budget", "6KiB",
            "-o", str(out), "--json")
    assert r.returncode == 0, r.stderr
    q = json.loads(r.stdout)
    assert q["flash_budget"]["budget_bytes"] == 6144 and q["wbits"] is None
    assert {d["name"] for d in q["layers"]} == {"conv2d", "conv2d_1", "conv2d_2", "conv2d_3", "linear"}
    g = json.loads(cli("codegen", str(out), "-o", str(tmp_path / "c"), "--json").stdout)
    total = g["flash_weights_bytes"] + g["flash_tables_bytes"] + g["flash_meta_bytes"]
    assert total == q["flash_budget"]["flash_bytes"] == sum(d["flash_bytes"] for d in q["layers"]) + \
        ADD_TABLE_BYTES * (1 - len(q["flash_budget"]["table_free_adds"])) <= 6144
