"""Tiled runs of layers (the least-RAM plan, codegen/plan.py tile_chains, runtime_c/nupes_tiled.c):
convolutions and poolings computed a band of output rows at a time, their intermediate tensors never
whole, the rows that overlapping windows share computed again. Only the order of work changes, so the
outputs must not: the host build (portable and DSP paths, under ASan/UBSan) equals the integer
reference bit for bit at every band count, with halo rows, strides, padding, depthwise and both
poolings, and so does the emulated board, whose per-layer profile adds up each layer's bands."""
import importlib
import shutil

import numpy as np
import pytest
import torch
from torch import nn

from nupes_edge import api, artifact, build
from nupes_edge.codegen.plan import BAND_LEVELS, plan, residual_slots, tiled_rows
from nupes_edge.importers import import_module
from nupes_edge.intref import run_int
from nupes_edge.layout import from_device, to_device
from nupes_edge.quant.driver import quantize_graph

HAVE_QEMU = shutil.which("qemu-system-arm") is not None and shutil.which("arm-none-eabi-gcc") is not None


class Stages(nn.Module):
    """Five spatial layers in a row, odd sizes: the first one's output is the largest tensor."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(3, 8, 3, padding=1)  # 21x19 -> 21x19
        self.c2 = nn.Conv2d(8, 8, 3, stride=2, padding=1)  # -> 11x10
        self.pool = nn.MaxPool2d(3, stride=2, padding=1)  # -> 6x5, windows overlap: halo rows
        self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8)  # -> 6x5
        self.avg = nn.AvgPool2d(2)  # -> 3x2
        self.fc = nn.Linear(8 * 3 * 2, 10)

    def forward(self, x):
        y = self.pool(torch.relu(self.c2(torch.relu(self.c1(x)))))
        return self.fc(torch.flatten(self.avg(torch.relu(self.dw(y))), 1))


def _host_equals_reference(qm, xq, ref, folder, max_bands=None):
    """The least-RAM host build (portable and DSP paths, under ASan/UBSan) equals the reference."""
    for dsp in (False, True):
        hb = build.build_host(qm, f"{folder}-{dsp}", sanitize=True, dsp=dsp, inplace=True, max_bands=max_bands)
        out = from_device(build.run_host(hb.runner, to_device(xq)), qm.graph.output_shape)
        np.testing.assert_array_equal(out, ref, err_msg=f"{folder.name}: max_bands={max_bands} dsp={dsp}")


def _quantized(module, name, shape, method, bits, torch_seed, rng_seed, n=8):
    """``module`` quantized on 32 random inputs of ``shape``; n random int8 inputs and their reference outputs."""
    torch.manual_seed(torch_seed)
    x = torch.randn(32, *shape)
    qm = quantize_graph(import_module(module.eval(), x[:1], name), x.numpy(), method, bits, name=name)
    xq = np.random.default_rng(rng_seed).integers(-128, 128, (n, *shape)).astype(np.int8)
    return qm, xq, run_int(qm, xq)


def _model(method, bits):
    torch.manual_seed(0)
    x = torch.randn(32, 3, 21, 19)
    g = import_module(Stages().eval(), x[:1], "stages")
    return quantize_graph(g, x.numpy(), method, bits, name="stages")


def test_the_loop_counts_rows_as_the_c_does():
    """Two 3x3 SAME convolutions over 8 rows, bands of 2 output rows: the first layer's rows needed
    per band are [0,3) [1,5) [3,7) [5,8); its tile keeps the overlap, so each of its 8 rows is computed
    once and the tile holds at most 4 rows. A residual block's last layer has a tile too, and its sums
    wait for the next band: rows [0, 2) go home once the next band's first call starts at input row 4."""
    geom = (8, 5, 4, 8, 5, 4, 3, 3, 1, 1, 1, 1)
    assert tiled_rows([geom, geom], 2) == ([4 * 5 * 4], [8, 8])
    assert tiled_rows([geom, geom], 2, last_in_tile=True) == ([4 * 5 * 4, 2 * 5 * 4], [8, 8])
    assert residual_slots([geom, geom], 2) == 2 and residual_slots([geom], 2) == 4
    pool = (8, 5, 4, 4, 5, 4, 2, 1, 2, 1, 0, 0)  # a 2x1 pooling of stride 2
    assert tiled_rows([geom, pool], 1) == ([2 * 5 * 4], [8, 4])


@pytest.mark.parametrize("method,bits", [("uniform", 8), ("nupes", 4), ("powerquant", 2)])
def test_tiled_runs_are_bit_exact_on_the_host_at_every_band_count(method, bits, tmp_path, monkeypatch):
    plan_mod = importlib.import_module("nupes_edge.codegen.plan")
    qm = _model(method, bits)
    xq = np.random.default_rng(5).integers(-128, 128, (8, 3, 21, 19)).astype(np.int8)
    ref = run_int(qm, xq)
    fast = plan(qm)
    chosen = plan_mod.choose_chains
    for whole in (False, True):  # the planner's choice; then all five layers as one chain
        if whole:
            monkeypatch.setattr(plan_mod, "choose_chains", lambda g, runs, *rest: runs)
        for bands in (2, 3, 100):  # 2 and 3 bands; one output row per band
            p = plan(qm, inplace=True, max_bands=bands)
            layers = [name for chain, _, _ in p.tiled.values() for name in chain]
            assert len(layers) == (5 if whole else len(layers)) >= 2, p.tiled
            assert whole or p.arena_bytes < fast.arena_bytes  # forced whole, five tiles can cost more
            _host_equals_reference(qm, xq, ref, tmp_path / f"b{whole}{bands}", max_bands=bands)
    monkeypatch.setattr(plan_mod, "choose_chains", chosen)
    # the overlapping pooling (halo rows) and the strided convolution are among the planner's own choices
    assert {"conv2d_1", "max_pool2d"} <= {n for chain, _, _ in plan(qm, inplace=True, max_bands=2).tiled.values()
                                         for n in chain}


def test_more_bands_less_ram_and_the_chains_mnist5k_tiles():
    mnist = import_module(api.examples.model("mnist5k", progress=False), api.examples.models.example_input("mnist5k"),
                          "mnist5k")
    qm = quantize_graph(mnist, api.examples.load("mnist5k", "calib")[0], "uniform", 8, name="m")
    arenas = [plan(qm, inplace=True, max_bands=b).arena_bytes for b in BAND_LEVELS]
    # in place only, mnist5k's peak (the first convolution's output beside its pooling) stays: tiling cuts it
    assert arenas == sorted(arenas, reverse=True) and arenas[-1] < arenas[1] < arenas[0] == plan(qm).arena_bytes
    # the first convolution and its pooling are the peak (12,544 B + 3,136 B whole); then the residual
    # block (depthwise -> 1x1 -> add) is written back over its input, the pooled tensor
    least = plan(qm, inplace=True)
    assert [chain for chain, _, _ in least.tiled.values()] == [["conv2d", "max_pool2d"],
                                                              ["conv2d_1", "conv2d_2", "add"]]


@pytest.mark.skipif(not HAVE_QEMU, reason="needs qemu-system-arm and arm-none-eabi-gcc (make setup installs them)")
def test_tiled_plan_on_the_emulated_board(tmp_path):
    qm = _model("nupes", 4)
    smallest = plan(qm, inplace=True, max_bands=BAND_LEVELS[-1])
    assert smallest.tiled
    artifact.save(qm, str(tmp_path / "s.nq"))
    fb, rep = api.run_emulated(str(tmp_path / "s.nq"), "stm32", str(tmp_path / "out"), "random", 4, profile=True,
                               progress=False, ram_budget=smallest.arena_bytes + 2 * smallest.scratch_entries)
    assert "tiled" in fb.sizes["ram_plan"] and fb.sizes["arena_bytes"] == smallest.arena_bytes
    assert rep.n == 4 and rep.mismatches == 0
    counts = {p["layer"]: p["count"] for p in rep.profile}
    tiled_layers = [name for chain, _, _ in smallest.tiled.values() for name in chain]
    assert all(counts[name] > 0 for name in tiled_layers), counts  # each band's calls summed per layer
    total = sum(counts.values())
    assert total < rep.count_last and total > 0.97 * rep.count_last, (total, rep.count_last)


class Depthwise(nn.Module):
    """Depthwise layers whose input dies at them: written over it four channels at a time."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(4, 32, 1)  # little scratch: the depthwise steps are the peak
        self.dw1 = nn.Conv2d(32, 32, 3, stride=2, padding=1, groups=32)  # 15x13 -> 8x7
        self.dw2 = nn.Conv2d(32, 32, 3, padding=1, groups=32)
        self.pw = nn.Conv2d(32, 8, 1)
        self.fc = nn.Linear(8, 10)

    def forward(self, x):
        y = torch.relu(self.dw2(torch.relu(self.dw1(torch.relu(self.c1(x))))))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(self.pw(y), 1), 1))


@pytest.mark.parametrize("method,bits", [("uniform", 8), ("nupes", 4), ("powerquant", 2)])
def test_depthwise_in_place_by_channel_groups_is_bit_exact(method, bits, tmp_path, monkeypatch):
    """nupes_depthwise_inplace, stride 1 and 2, odd sizes; its rows-held-aside alternative is taken
    away so that the planner uses channel groups even where a ring of rows would be smaller."""
    plan_mod = importlib.import_module("nupes_edge.codegen.plan")
    monkeypatch.setattr(plan_mod, "inplace_band", lambda *a, **k: None)
    monkeypatch.setattr(plan_mod, "choose_chains", lambda *a, **k: [])  # in place, not tiled
    qm, xq, ref = _quantized(Depthwise(), "dw", (4, 15, 13), method, bits, 1, 2)
    p = plan(qm, inplace=True)
    assert [n for n, how in p.inplace.items() if how[0] == "channels"] == ["conv2d_1", "conv2d_2"], p.inplace
    assert sum("nupes_depthwise_inplace(" in st.call for st in p.steps) == 2
    _host_equals_reference(qm, xq, ref, tmp_path / "d")


class Residual(nn.Module):
    """Residual blocks whose result can be written back over their input: two 3x3 layers and an add,
    a 5x3 layer and an add (the block's input as the add's second operand), odd sizes."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.a1, self.a2 = nn.Conv2d(8, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1)
        self.b = nn.Conv2d(8, 8, (5, 3), padding=(2, 1))
        self.fc = nn.Linear(8, 10)

    def forward(self, x):
        x = torch.relu(self.stem(x))
        x = torch.relu(x + self.a2(torch.relu(self.a1(x))))
        x = torch.relu(self.b(x) + x)
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


@pytest.mark.parametrize("method,bits", [("uniform", 8), ("nupes", 4), ("powerquant", 2)])
def test_residual_blocks_written_back_over_their_input_are_bit_exact(method, bits, tmp_path):
    qm, xq, ref = _quantized(Residual(), "res", (3, 19, 11), method, bits, 2, 4)
    fast = plan(qm)
    for bands in BAND_LEVELS[1:]:  # the levels that tile (the first writes in place only)
        p = plan(qm, inplace=True, max_bands=bands)
        residual = [chain for chain, _, _ in p.tiled.values() if chain[-1].startswith("add")]
        assert residual and p.arena_bytes < fast.arena_bytes, p.tiled
        assert sum("nupes_tiled_residual(" in st.call for st in p.steps) == len(residual)
        _host_equals_reference(qm, xq, ref, tmp_path / f"r{bands}", max_bands=bands)


class Inverted(nn.Module):
    """MobileNetV2's inverted residual block: 1x1 expansion, 3x3 depthwise, 1x1 projection, and the
    add of the block's input."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(4, 8, 1)
        self.b1 = nn.Sequential(nn.Conv2d(8, 48, 1), nn.ReLU6(), nn.Conv2d(48, 48, 3, padding=1, groups=48), nn.ReLU6(),
                                nn.Conv2d(48, 8, 1))
        self.b2 = nn.Conv2d(8, 16, 3, stride=2, padding=1)
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        x = torch.relu(self.stem(x))
        x = self.b2(x + self.b1(x))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


@pytest.mark.parametrize("method,bits", [("uniform", 8), ("nupes", 4)])
def test_inverted_residual_blocks_tile_and_stay_exact(method, bits, tmp_path):
    """The expanded tensors (six times the block's channels) are never whole, and the block's result
    is written back over its input."""
    qm, xq, ref = _quantized(Inverted(), "ir", (4, 20, 18), method, bits, 3, 6, n=6)
    fast = plan(qm)
    p = plan(qm, inplace=True)
    chains = [chain for chain, _, _ in p.tiled.values()]
    assert ["conv2d_1", "conv2d_2", "conv2d_3", "add"] in chains, chains
    assert p.arena_bytes + 2 * p.scratch_entries < 0.5 * (fast.arena_bytes + 2 * fast.scratch_entries)
    _host_equals_reference(qm, xq, ref, tmp_path / "i")
