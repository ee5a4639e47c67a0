"""Exported .tflite files in the real interpreters: TFLite Micro (bit for bit) and LiteRT."""
import numpy as np
import pytest

from nupes_edge import examples, torch_exec, tflite_export
from nupes_edge.errors import NupesError
from nupes_edge.importers import import_module
from nupes_edge.quant.driver import quantize_graph
from nupes_edge.quant.reconstruct import ReconConfig
from nupes_edge.verify import reference_io

N = 200


def quantized(name, method, bits):
    g = import_module(examples.model(name, progress=False), examples.models.example_input(name), name)
    return quantize_graph(g, examples.load(name, "calib")[0], method, bits, name=name, recon=ReconConfig(iters=40, batch=32))


def nhwc(shape):
    return [1, shape[1], shape[2], shape[0]] if len(shape) == 3 else [1, *shape]


def run_tflm(data, rows, in_shape):
    from tflite_micro import runtime

    it = runtime.Interpreter.from_bytes(data)
    out = []
    for r in rows:
        it.set_input(r.reshape(nhwc(in_shape)), 0)
        it.invoke()
        out.append(it.get_output(0).ravel().copy())
    return np.array(out)


def run_litert(data, rows):
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_content=data)
    it.allocate_tensors()
    i, o = it.get_input_details()[0], it.get_output_details()[0]
    out = []
    for r in rows:
        it.set_tensor(i["index"], r.reshape(i["shape"]).astype(i["dtype"]))
        it.invoke()
        out.append(it.get_tensor(o["index"]).ravel().copy())
    return np.array(out)


@pytest.mark.parametrize("name", examples.NAMES)
def test_int8_export_is_bit_exact_with_tflite_micro(name):
    qm = quantized(name, "uniform", 8)
    x, _ = examples.load(name, "test")
    dev_in, ref = reference_io(qm, x[:N])
    data = tflite_export.export(qm, "int8")
    got = run_tflm(data, dev_in, qm.graph.input_shape)
    assert got.shape == (N, ref[0].size)
    np.testing.assert_array_equal(got, ref.reshape(N, -1))
    # LiteRT (XNNPACK) runs the same file; it rounds differently, by at most one step
    lite = run_litert(data, dev_in)
    assert np.abs(lite.astype(int) - ref.reshape(N, -1)).max() <= 1


@pytest.mark.parametrize("method,bits", [("nupes", 4), ("powerquant", 3)])
def test_power_quantized_models_export_to_runnable_int8(method, bits):
    qm = quantized("digits", method, bits)
    x, y = examples.load("digits", "test")
    dev_in, ref = reference_io(qm, x)
    got = run_tflm(tflite_export.export(qm, "int8"), dev_in, qm.graph.input_shape)
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
    np.testing.assert_array_equal(run_tflm(lut, dev_in, qm.graph.input_shape), run_tflm(plain, dev_in, qm.graph.input_shape))


def test_tflm_lut_refuses_8_bit_weights():
    with pytest.raises(NupesError, match="at most 7 bits"):
        tflite_export.export(quantized("digits", "uniform", 8), "tflm-lut")
