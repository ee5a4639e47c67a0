"""Exported .tflite files in the real interpreters: TFLite Micro (bit for bit) and LiteRT."""
import numpy as np
import pytest

from nupes_edge import examples, torch_exec, tflite_export
from nupes_edge.errors import NupesError
from nupes_edge.importers import import_module
from nupes_edge.interpreters import litert_interpreter, run_litert, run_tflm
from nupes_edge.quant.driver import quantize_graph
from nupes_edge.quant.reconstruct import ReconConfig
from nupes_edge.intref import quantize_input, run_int
from nupes_edge.layout import to_device
from nupes_edge.verify import reference_io

N = 200


def quantized(name, method, bits):
    g = import_module(examples.model(name, progress=False), examples.models.example_input(name), name)
    return quantize_graph(g, examples.load(name, "calib")[0], method, bits, name=name, recon=ReconConfig(iters=40, batch=32))


@pytest.mark.parametrize("name", examples.NAMES)
def test_int8_export_is_bit_exact_with_tflite_micro(name):
    qm = quantized(name, "uniform", 8)
    x, _ = examples.load(name, "test")
    dev_in, ref = reference_io(qm, x[:N])
    got = run_tflm(tflite_export.export(qm, "int8"), dev_in)
    assert got.shape == (N, ref[0].size)
    np.testing.assert_array_equal(got, ref.reshape(N, -1))


@pytest.mark.parametrize("name", examples.NAMES)
def test_int8_export_in_litert_reference_kernels(name):
    """LiteRT's reference kernels (CPU-independent integer C) equal the integer reference on every
    tensor up to the last layer. Its FULLY_CONNECTED derives the multiplier from the float32
    product s_in * s_w (conv, TFLM and we use double), so the last layer may differ by one step."""
    qm = quantized(name, "uniform", 8)
    x, _ = examples.load(name, "test")
    xq = quantize_input(x[:N], qm.input_q.scale, qm.input_q.zero_point)
    recorded = {}
    ref = run_int(qm, xq, record=lambda t, v: recorded.setdefault(t, []).append(v))
    it = litert_interpreter(tflite_export.export(qm, "int8"), preserve_all_tensors=True)
    index = {d["name"]: d["index"] for d in it.get_tensor_details()}
    inner = [n.output for n in qm.graph.nodes if n.op not in ("flatten",) and n.output != qm.graph.output_name]
    assert inner and all(t in index for t in inner)
    dev_in = to_device(xq)
    last = []
    for i, row in enumerate(dev_in):
        it.set_tensor(it.get_input_details()[0]["index"], row.reshape(it.get_input_details()[0]["shape"]))
        it.invoke()
        for t in inner:
            want = to_device(np.concatenate(recorded[t])[i:i + 1])[0]
            np.testing.assert_array_equal(it.get_tensor(index[t]).ravel(), want, err_msg=f"tensor {t}, input {i}")
        last.append(it.get_tensor(it.get_output_details()[0]["index"]).ravel().copy())
    assert np.abs(np.array(last, int) - ref.reshape(N, -1)).max() <= 1
    np.testing.assert_array_equal(run_litert(tflite_export.export(qm, "int8"), dev_in), np.array(last))


@pytest.mark.parametrize("method,bits", [("nupes", 4), ("powerquant", 3)])
def test_power_quantized_models_export_to_runnable_int8(method, bits):
    qm = quantized("digits", method, bits)
    x, y = examples.load("digits", "test")
    dev_in, ref = reference_io(qm, x)
    got = run_tflm(tflite_export.export(qm, "int8"), dev_in)
    # re-quantized to int8 weights: close to the integer model, not identical
    assert (got.argmax(1) == y).mean() >= (ref.reshape(len(ref), -1).argmax(1) == y).mean() - 0.03


@pytest.mark.parametrize("name", examples.NAMES)
def test_float_export_matches_the_fake_quant_weights_in_litert(name):
    qm = quantized(name, "nupes", 4)
    x, _ = examples.load(name, "test")
    x = x[:50]
    got = run_litert(tflite_export.export(qm, "float"), x.transpose(0, 2, 3, 1))
    want = torch_exec.run_numpy(qm.graph, x, weights=qm.fq_weights())
    np.testing.assert_allclose(got, want.reshape(len(want), -1), atol=1e-4, rtol=1e-4)


def test_unknown_format_is_refused():
    with pytest.raises(NupesError, match="unknown export format"):
        tflite_export.export(quantized("digits", "uniform", 8), "fp16")


@pytest.mark.parametrize("name", examples.NAMES)
def test_tflm_lut_compression_keeps_the_int8_model_exactly(name):
    qm = quantized(name, "nupes", 4)
    x, _ = examples.load(name, "test")
    dev_in, _ = reference_io(qm, x[:100])
    plain, lut = tflite_export.export(qm, "int8"), tflite_export.export(qm, "tflm-lut")
    assert b"TFLM_DECODE" in lut or len(lut) != len(plain)
    np.testing.assert_array_equal(run_tflm(lut, dev_in), run_tflm(plain, dev_in))


def test_tflm_lut_refuses_8_bit_weights():
    with pytest.raises(NupesError, match="at most 7 bits"):
        tflite_export.export(quantized("digits", "uniform", 8), "tflm-lut")
