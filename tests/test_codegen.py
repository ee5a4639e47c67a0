"""Generated C against the integer reference: bit for bit, on every bundled example, every method,
weights 2..8 bits, both kernel paths (portable C and the DSP path with emulated intrinsics), and
under AddressSanitizer + UBSan. Plus the memory report and codegen-time refusals."""
import os
import shutil
import subprocess

import pytest

from nupes_edge import codegen, examples
from nupes_edge.build import build_host, run_host
from nupes_edge.errors import NupesError
from nupes_edge.importers import import_module
from nupes_edge.quant import METHODS
from nupes_edge.quant.driver import quantize_graph
from nupes_edge.quant.reconstruct import ReconConfig
from nupes_edge.verify import compare, reference_io

BITS = (2, 3, 4, 5, 8)
N_INPUTS = 200
# The bit-exactness of the C does not depend on how long the reconstruction trained.
RECON = ReconConfig(iters=40, batch=32)

_graphs = {}


def graph(name):
    if name not in _graphs:
        _graphs[name] = import_module(examples.model(name, progress=False), examples.models.example_input(name), name)
    return _graphs[name]


def quantized(name, method, bits):
    return quantize_graph(graph(name), examples.load(name, "calib")[0], method, bits, recon=RECON, name=name)


def check_bit_exact(qm, tmp_path, n=N_INPUTS, **build_kw):
    name = qm.meta["name"]
    x, y = examples.load(name, "test")
    x, y = x[:n], y[:n]
    hb = build_host(qm, str(tmp_path), **build_kw)
    dev_in, ref = reference_io(qm, x)
    report = compare(qm, x, y, ref, run_host(hb.runner, dev_in))
    assert report.n == n
    assert report.mismatches == 0, report.first_diffs
    return hb


@pytest.mark.parametrize("bits", BITS)
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("name", examples.NAMES)
def test_host_build_is_bit_exact(name, method, bits, tmp_path):
    # the DSP path (emulated intrinsics) on half of the grid, the portable path on the other half
    dsp = (BITS.index(bits) + METHODS.index(method)) % 2 == 1
    check_bit_exact(quantized(name, method, bits), tmp_path, dsp=dsp)


@pytest.mark.parametrize("name,method,bits", [("digits", "nupes", 3), ("mnist5k", "powerquant", 5),
                                              ("mnist5k", "uniform", 8), ("digits", "adaround", 2)])
def test_sanitized_build_is_clean_and_bit_exact(name, method, bits, tmp_path):
    for dsp in (False, True):
        check_bit_exact(quantized(name, method, bits), tmp_path / str(dsp), sanitize=True, dsp=dsp)


def test_memory_report_meets_the_bounds():
    for name in examples.NAMES:
        for bits in (2, 3, 4, 8):
            qm = quantized(name, "powerquant", bits)
            p = codegen.plan(qm)
            rep = p.report
            params = rep["params"]
            assert rep["flash_weights_bytes"] <= rep["flash_weights_bound_bytes"]
            # the bound is ceil(params·b/8) per layer plus < 1 byte of padding per output channel and a guard
            # byte; dense rows for the pairs kernel are padded to a whole group of four codes (3 codes more)
            channels = sum(n.weight.shape[0] for n in qm.graph.weight_nodes())
            group_pad = sum(L.bias.size * (1 + 3 * L.bits // 8) for L in p.layers if L.pairs is not None)
            assert rep["flash_weights_bound_bytes"] <= ((params * bits + 7) // 8 + channels + group_pad
                                                        + 2 * len(qm.graph.weight_nodes()))
            assert rep["arena_bytes"] <= rep["arena_naive_bytes"]
            assert rep["macs"] > params


def test_arena_reuses_memory_on_the_examples():
    for name in examples.NAMES:
        rep = codegen.plan(quantized(name, "uniform", 8)).report
        assert rep["arena_bytes"] < rep["arena_naive_bytes"]


@pytest.mark.skipif(shutil.which("arm-none-eabi-gcc") is None, reason="make setup installs arm-none-eabi-gcc")
def test_generated_code_compiles_for_cortex_m4_with_the_dsp_path(tmp_path):
    qm = quantized("mnist5k", "nupes", 4)
    gen = codegen.generate(qm, str(tmp_path))
    flags = ["-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic", "-O2", "-mcpu=cortex-m4", "-mthumb",
             "-mfloat-abi=hard", "-mfpu=fpv4-sp-d16", "-I", str(tmp_path), "-I", str(tmp_path / "runtime")]
    objs = []
    for rel in gen.files:
        if rel.endswith(".c"):
            obj = tmp_path / (os.path.basename(rel) + ".o")
            r = subprocess.run(["arm-none-eabi-gcc", *flags, "-c", str(tmp_path / rel), "-o", str(obj)],
                               capture_output=True, text=True)
            assert r.returncode == 0, r.stderr
            objs.append(obj)
    # the DSP path really is compiled in: the dot product uses SMLAD
    dis = subprocess.run(["arm-none-eabi-objdump", "-d", str(tmp_path / "nupes_fully_connected.c.o")],
                         capture_output=True, text=True).stdout
    assert "smlad" in dis and "sxtb16" in dis


def test_codegen_refuses_what_the_runtime_does_not_implement():
    qm = quantized("digits", "uniform", 8)
    conv = next(n for n in qm.graph.nodes if n.op == "conv2d")
    conv.attrs["dilation"] = [2, 2]
    try:
        with pytest.raises(NupesError, match=r"conv2d.*dilation"):
            codegen.plan(qm)
    finally:
        del conv.attrs["dilation"]
    pool = next(n for n in qm.graph.nodes if n.op == "avgpool2d")
    pool.attrs["pads"] = [1, 1, 1, 1]
    try:
        with pytest.raises(NupesError, match="average pooling with padding"):
            codegen.plan(qm)
    finally:
        pool.attrs["pads"] = [0, 0, 0, 0]


def test_generated_sources_are_deterministic(tmp_path):
    qm = quantized("digits", "powerquant", 4)
    _, a = codegen.render(qm)
    _, b = codegen.render(qm)
    assert a == b
    assert "float" not in a["nupes_model_digits.c"] and "float" not in a["nupes_model_digits_data.c"]
    assert "malloc" not in "".join(a.values())
