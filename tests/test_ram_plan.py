"""The least-RAM plan (codegen/plan.py, runtime_c/nupes_conv2d_inplace.c): convolutions and
elementwise ops written over inputs that die there. It changes only where bytes live, so the outputs
must not change: the host build (portable and DSP paths) equals the integer reference bit for bit on
every model, and the arena shrinks. --ram-budget picks the fastest plan that fits, or names the
minimum; a model that overflows the board's RAM is built with the least-RAM plan."""
import json
import os
import shutil

import numpy as np
import pytest

from nupes_edge import api, artifact, build, examples
from nupes_edge.codegen.plan import BAND_LEVELS, inplace_band, inplace_slots, plan
from nupes_edge.importers import import_module, import_tflite
from nupes_edge.intref import run_int
from nupes_edge.layout import to_device
from nupes_edge.quant.driver import quantize_graph
from tests.test_cli import cli

SHARED = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "shared", "models"))
HAVE_QEMU = shutil.which("qemu-system-arm") is not None and shutil.which("arm-none-eabi-gcc") is not None


def _example(name, method, bits):
    g = import_module(examples.model(name, progress=False), examples.models.example_input(name), name)
    return quantize_graph(g, examples.load(name, "calib")[0], method, bits, name=name)


def _kept(rel):
    path = os.path.join(SHARED, rel)
    if not os.path.isfile(path):
        pytest.skip(f"public model absent: {path} (CI provides ../shared/models)")
    return quantize_graph(import_tflite(path), None, "uniform", 8, name="m")


CASES = {
    "digits-w8": lambda: _example("digits", "uniform", 8), "digits-w2": lambda: _example("digits", "nupes", 2),
    "mnist5k-w4": lambda: _example("mnist5k", "nupes", 4),
    "kws": lambda: _kept("mlperf-tiny/kws_ref_model.tflite"), "ic": lambda: _kept("mlperf-tiny/pretrainedResnet_quant.tflite"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_least_ram_plan_is_bit_exact_on_the_host(case, tmp_path):
    qm = CASES[case]()
    fast, least = plan(qm), plan(qm, inplace=True)
    assert (least.inplace or least.tiled) and least.arena_bytes <= fast.arena_bytes
    xq = np.random.default_rng(3).integers(-128, 128, (6, *qm.graph.input_shape)).astype(np.int8)
    ref = run_int(qm, xq)
    ref = to_device(ref) if ref.ndim == 4 else ref.reshape(len(ref), -1)
    for dsp in (False, True):
        hb = build.build_host(qm, str(tmp_path / f"dsp{dsp}"), dsp=dsp, inplace=True)
        np.testing.assert_array_equal(build.run_host(hb.runner, to_device(xq)), ref)


def test_least_ram_plan_shrinks_the_arenas_of_the_mlperf_models():
    kws, ic = _kept("mlperf-tiny/kws_ref_model.tflite"), _kept("mlperf-tiny/pretrainedResnet_quant.tflite")
    need = lambda p: p.arena_bytes + 2 * p.scratch_entries  # noqa: E731
    assert need(plan(kws, inplace=True)) <= 0.6 * need(plan(kws))  # 16,000 + 3,200 -> 11,200 + 2
    assert need(plan(ic, inplace=True)) <= 0.75 * need(plan(ic))  # 49,152 + 2,304 -> 37,440 + 2


def test_rows_held_aside():
    assert inplace_slots(32, 32, 40, 32, 32, 40, 3, 1, 1) == 2  # 3x3 SAME: the row being made and one more
    assert inplace_slots(16, 16, 8, 8, 8, 8, 3, 2, 1) == 1  # stride 2 frees input rows twice as fast
    assert inplace_slots(32, 32, 40, 32, 32, 40, 3, 1, 1, band=4) == 8  # a band of 4 and the 4 before it
    assert inplace_band(32, 32, 40, 32, 32, 40, 3, 1, 1) == (4, 8)  # the most rows per call within a quarter


def test_ram_budget_picks_a_plan_or_names_the_minimum(tmp_path):
    qm = CASES["digits-w8"]()
    artifact.save(qm, str(tmp_path / "d.nq"))
    fast, least = plan(qm), plan(qm, inplace=True, max_bands=BAND_LEVELS[0])  # the first: in place only
    smallest = plan(qm, inplace=True, max_bands=BAND_LEVELS[-1])  # tiled to a row per band where that helps
    need = lambda p: p.arena_bytes + 2 * p.scratch_entries  # noqa: E731
    assert need(smallest) < need(least) < need(fast) and not least.tiled and smallest.tiled
    r = cli("build", "d.nq", "--board", "host", "--ram-budget", str(need(smallest) - 1), cwd=tmp_path)
    assert r.returncode == 2 and f"minimum of {need(smallest):,} B" in r.stderr
    for budget, arena in ((need(smallest), smallest.arena_bytes), (need(least), least.arena_bytes),
                          (need(fast), fast.arena_bytes)):
        r = cli("build", "d.nq", "--board", "host", "--ram-budget", str(budget), "--json", cwd=tmp_path)
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["arena_bytes"] == arena


@pytest.mark.skipif(not HAVE_QEMU, reason="needs qemu-system-arm and arm-none-eabi-gcc (make setup installs them)")
def test_mlcommons_resnet_large_fits_the_stm32f405_and_is_exact(tmp_path):
    """MLCommons' pretrainedResnet_large_int8.tflite overflowed the F405's 128 KB by 11 KB; the
    least-RAM plan (chosen by itself) fits it, bit-exact and equal to TFLite Micro on the file."""
    qm = _kept("zoo/mlc_resnet_large_int8.tflite")
    artifact.save(qm, str(tmp_path / "rl.nq"))
    fb, rep = api.run_emulated(str(tmp_path / "rl.nq"), "stm32", str(tmp_path / "out"), "random", 2, progress=False)
    assert fb.sizes["ram_plan"].startswith("least RAM") and fb.sizes["ram_used"] <= 128 * 1024
    assert rep.n == 2 and rep.mismatches == 0 and rep.original["mismatches"] == 0
