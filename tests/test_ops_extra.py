"""The operators real microcontroller models use beyond conv/dense/pool/add: channel concatenation
and the table activations (sigmoid, tanh, hard-swish, leaky ReLU). Each is bit-exact across the
integer reference, the host build (portable and DSP paths, under ASan/UBSan) and TFLite Micro
running the int8 export, and each imports from PyTorch and from .tflite."""
import shutil

import numpy as np
import pytest
import torch
from torch import nn

from nupes_edge import artifact, build, tflite_export
from nupes_edge.importers import import_module, import_tflite_bytes
from nupes_edge.interpreters import run_tflm
from nupes_edge.intref import run_int
from nupes_edge.layout import from_device, to_device
from nupes_edge.quant.driver import quantize_graph

ACTS = {"sigmoid": nn.Sigmoid(), "tanh": nn.Tanh(), "hardswish": nn.Hardswish(), "leaky_relu": nn.LeakyReLU(0.1)}


class Branches(nn.Module):
    """Two convolution branches concatenated along the channels, an activation, a classifier."""

    def __init__(self, act: nn.Module):
        super().__init__()
        self.a = nn.Conv2d(3, 4, 3, padding=1)
        self.b = nn.Conv2d(3, 5, 1)
        self.act = act
        self.mix = nn.Conv2d(9, 6, 3, stride=2, padding=1)
        self.fc = nn.Linear(6 * 4 * 4, 10)

    def forward(self, x):
        y = torch.cat([torch.relu(self.a(x)), self.b(x)], dim=1)
        return self.fc(torch.flatten(self.act(self.mix(y)), 1))


def quantized(act_name: str, method="uniform", bits=8):
    torch.manual_seed(0)
    net = Branches(ACTS[act_name]).eval()
    x = torch.randn(64, 3, 8, 8)
    g = import_module(net, x[:1], "branches")
    assert {"concat", act_name} <= {n.op for n in g.nodes}
    return quantize_graph(g, x.numpy(), method, bits, name="branches")


def device_out(qm, xq, tmp_path, dsp):
    hb = build.build_host(qm, str(tmp_path / f"dsp{dsp}"), sanitize=True, dsp=dsp)
    return from_device(build.run_host(hb.runner, to_device(xq)), qm.graph.output_shape)


@pytest.mark.parametrize("act_name", sorted(ACTS))
def test_concat_and_table_activation_are_bit_exact_everywhere(act_name, tmp_path):
    pytest.importorskip("nupes_edge.intref.lut_ops")
    qm = quantized(act_name)
    xq = np.random.default_rng(1).integers(-128, 128, (40, 3, 8, 8)).astype(np.int8)
    ref = run_int(qm, xq)
    for dsp in (False, True):
        np.testing.assert_array_equal(device_out(qm, xq, tmp_path, dsp), ref)
    np.testing.assert_array_equal(run_int(artifact.loads(artifact.dumps(qm)), xq), ref)
    exported = tflite_export.export(qm, "int8")
    np.testing.assert_array_equal(run_tflm(exported, xq.transpose(0, 2, 3, 1)), ref.reshape(40, -1))
    # ... and the exported file comes back as the same integer model, kept exactly
    back = quantize_graph(import_tflite_bytes(exported, "b.tflite"), None, "uniform", 8, name="b")
    assert {n.op for n in back.graph.nodes} >= {"concat", act_name}
    np.testing.assert_array_equal(run_int(back, xq).reshape(40, -1), ref.reshape(40, -1))


def test_concat_inputs_share_one_quantization_and_power_weights_stay_exact(tmp_path):
    pytest.importorskip("nupes_edge.intref.lut_ops")
    qm = quantized("leaky_relu", "powerquant", 4)
    cat = next(n for n in qm.graph.nodes if n.op == "concat")
    assert len({(qm.act[t].scale, qm.act[t].zero_point) for t in [*cat.inputs, cat.output]}) == 1
    xq = np.random.default_rng(2).integers(-128, 128, (20, 3, 8, 8)).astype(np.int8)
    np.testing.assert_array_equal(device_out(qm, xq, tmp_path, True), run_int(qm, xq))


def test_cat_along_another_axis_is_a_clear_error():
    class Bad(nn.Module):
        def forward(self, x):
            return torch.cat([x, x], dim=2)

    from nupes_edge.errors import NupesError

    with pytest.raises(NupesError, match="only the channels"):
        import_module(Bad().eval(), torch.randn(1, 3, 4, 4), "bad")


@pytest.mark.skipif(shutil.which("qemu-system-arm") is None or shutil.which("arm-none-eabi-gcc") is None,
                    reason="make setup installs qemu-system-arm and arm-none-eabi-gcc")
@pytest.mark.parametrize("act_name,method,bits", [("hardswish", "uniform", 8), ("sigmoid", "powerquant", 4)])
def test_concat_and_table_activation_on_the_emulated_board(act_name, method, bits, tmp_path):
    """The Cortex-M4 build (newlib's memcpy in the concatenation, the table kernel) over serial."""
    pytest.importorskip("nupes_edge.intref.lut_ops")
    from tests.boardrun import run_on_board

    qm = quantized(act_name, method, bits)
    x = np.random.default_rng(3).normal(0, 1, (12, 3, 8, 8)).astype(np.float32)
    _, r = run_on_board(qm, x, tmp_path, max_seconds=120)
    src = open(f"{tmp_path}/src/nupes_model_branches.c").read()
    assert "nupes_concat_hwc_s8(" in src and "nupes_lut_s8(" in src
    assert r.n == len(x) and r.mismatches == 0, r.first_diffs
