"""The dense kernels nupes_fully_connected_s8 (int8 codes, levels code << lshift) and
nupes_fully_connected_p4 / _p2 (4- / 2-bit codes through a table of level pairs) on the emulated
STM32, bit for bit against the integer reference: their Thumb-2 jobs (four rows, two rows, an odd
last row as its own twin) run only there; the host builds run the C definitions
(tests/test_kernels_specialized.py::test_dense_kernels). Cases: 128 -> 128 at W8 uniform and W4 / W2
(powerquant and uniform), an odd row count, k not a multiple of 4 (the last columns outside the
jobs), a single output, levels shifted by G > 0 (lshift), ReLU and narrow clamps, and shifts on
either side of the fused requantization."""
import shutil

import numpy as np
import pytest

from nupes_edge.ir import Graph, Node, infer_shapes
from nupes_edge.quant.driver import quantize_graph
from tests.boardrun import run_on_board
from tests.test_kernels_im2col import _requant_corners, _requant_fused, _requant_fused_narrow

KERNEL = {8: "nupes_fully_connected_s8", 4: "nupes_fully_connected_p4", 2: "nupes_fully_connected_p2"}

_on_board = pytest.mark.skipif(shutil.which("qemu-system-arm") is None or shutil.which("arm-none-eabi-gcc") is None,
                               reason="make setup installs qemu-system-arm and arm-none-eabi-gcc")


def _shifted_levels(g):
    """Make an 8-bit layer's levels its codes << g (what fc_kernel sends to nupes_fully_connected_s8 with
    lshift = g; the lowering produces them only for a = 1 at G = 0, so the test builds them): the
    table, the bound, and the shift lowered by g so the outputs keep their scale."""
    def mutate(p, rng):
        p.G = g
        p.lut = (np.arange(len(p.lut), dtype=np.int32) << g).astype(p.lut.dtype)
        mags = np.abs(p.codes.reshape(p.codes.shape[0], -1).astype(np.int64))
        x_max = max(128 + p.in_zp, 127 - p.in_zp)
        p.acc_bound = (p.lut.astype(np.int64)[mags].sum(axis=1) * x_max + np.abs(p.bias.astype(np.int64)))
        assert p.acc_bound.max() <= 2**31 - 1
        p.shift = (p.shift - g).astype(np.int32)
    mutate.__name__ = f"lshift{g}"
    return mutate


def dense_model(k, out_n, method, bits, seed, act="none", n=8, mutate=None):
    """A one-layer dense model (quantized) and its float inputs."""
    rng = np.random.default_rng(seed)
    node = Node("fc", "linear", ["x"], "y", {"act": act}, rng.normal(0, 1, (out_n, k)).astype(np.float32),
                rng.normal(0, 0.5, out_n).astype(np.float32))
    g = Graph("x", (k,), node.output, [node])
    infer_shapes(g)
    x = rng.normal(0.3, 1.0, (n, k)).astype(np.float32)
    qm = quantize_graph(g, x, method, bits, name="k")
    if mutate is not None:
        mutate(qm.params[node.name], rng)
    return qm, x


CASES = [  # (k, out_n, method, bits, act, mutation)
    (128, 128, "uniform", 8, "relu", None),
    (128, 128, "powerquant", 4, "none", None),
    (128, 128, "uniform", 4, "relu", None),
    (128, 128, "powerquant", 2, "none", None),
    (128, 128, "uniform", 2, "relu", None),
    (70, 7, "uniform", 8, "none", _requant_corners),
    (70, 7, "powerquant", 4, "none", _requant_fused_narrow),
    (70, 7, "powerquant", 2, "relu", None),
    (37, 1, "uniform", 8, "none", _requant_fused),
    (37, 1, "powerquant", 4, "relu", None),
    (37, 1, "uniform", 2, "none", _requant_corners),
    (3, 5, "uniform", 8, "none", None),  # no whole group of four columns
    (3, 6, "powerquant", 4, "none", None),
    (64, 12, "powerquant", 8, "none", _shifted_levels(3)),
    (70, 7, "powerquant", 8, "relu", _shifted_levels(5)),
    (64, 10, "uniform", 8, "relu6", _requant_fused_narrow),
    (66, 9, "powerquant", 2, "relu6", _requant_fused_narrow),
    (64, 11, "uniform", 4, "none", _requant_fused),
    (4, 1, "uniform", 8, "none", _requant_fused),  # the fused path with one group, one row, two, three
    (8, 2, "powerquant", 2, "relu", None),
    (12, 3, "powerquant", 4, "none", _requant_fused_narrow),
    (16, 9, "uniform", 2, "none", _requant_corners),  # whole groups, shifts outside the fused path
    (20, 6, "uniform", 8, "relu", _requant_corners),
]


@pytest.mark.parametrize("dsp", [False, True], ids=["portable", "dsp"])
@pytest.mark.parametrize("k,out_n,method,bits,act,mutate", CASES,
                         ids=[f"{k}x{o}-{m}-w{b}-{a}-{f.__name__ if f else 'as_is'}" for k, o, m, b, a, f in CASES])
def test_dense_cases_on_the_host(tmp_path, k, out_n, method, bits, act, mutate, dsp):
    """The same cases through the jobs' C definitions (what the host builds run), sanitizers on."""
    from nupes_edge.build import build_host, run_host
    from nupes_edge.layout import from_device
    from nupes_edge.verify import reference_io

    qm, x = dense_model(k, out_n, method, bits, 3 * k + out_n + bits, act, n=8, mutate=mutate)
    dev_in, ref = reference_io(qm, x)
    hb = build_host(qm, str(tmp_path), dsp=dsp, sanitize=True)
    assert f"{KERNEL[bits]}(" in open(f"{tmp_path}/src/nupes_model_k.c").read()
    np.testing.assert_array_equal(from_device(run_host(hb.runner, dev_in), (out_n,)), ref)


@_on_board
@pytest.mark.parametrize("k,out_n,method,bits,act,mutate", CASES,
                         ids=[f"{k}x{o}-{m}-w{b}-{a}-{f.__name__ if f else 'as_is'}" for k, o, m, b, a, f in CASES])
def test_dense_on_the_emulated_board(tmp_path, k, out_n, method, bits, act, mutate):
    seed = 3 * k + out_n + bits
    qm, x = dense_model(k, out_n, method, bits, seed, act, n=8, mutate=mutate)
    fb, r = run_on_board(qm, x, tmp_path)
    assert f"{KERNEL[bits]}(" in open(f"{tmp_path}/src/nupes_model_k.c").read()
    if mutate is not None and mutate.__name__.startswith("lshift"):  # the kernel really shifts its sums
        from nupes_edge.codegen import plan
        assert [L.lshift for L in plan(qm).layers] == [int(mutate.__name__[len("lshift"):])]
    assert r.n == len(x) and r.mismatches == 0, r.first_diffs


# The Cortex-M55 (mps3-an547) runs the same Thumb-2 jobs (the dense kernels have no Helium form yet):
# wide layers (300 inputs, 100 outputs), 17, 3 and 1 outputs, every weight format
M55_CASES = [(300, 100, "uniform", 8, "relu", None), (300, 17, "powerquant", 4, "none", _requant_corners),
             (100, 3, "powerquant", 2, "relu6", _requant_fused_narrow), (37, 1, "uniform", 4, "none", _requant_fused),
             (64, 12, "powerquant", 8, "none", _shifted_levels(3))]


@_on_board
@pytest.mark.parametrize("k,out_n,method,bits,act,mutate", M55_CASES,
                         ids=[f"{k}x{o}-{m}-w{b}-{a}-{f.__name__ if f else 'as_is'}" for k, o, m, b, a, f in M55_CASES])
def test_dense_on_the_emulated_m55(tmp_path, k, out_n, method, bits, act, mutate):
    qm, x = dense_model(k, out_n, method, bits, 5 * k + out_n + bits, act, n=6, mutate=mutate)
    _, r = run_on_board(qm, x, tmp_path, "mps3-an547")
    assert f"{KERNEL[bits]}(" in open(f"{tmp_path}/src/nupes_model_k.c").read()
    assert r.n == len(x) and r.mismatches == 0, r.first_diffs
