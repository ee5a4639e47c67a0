"""TRANSPOSE_CONV (int8 and float) against TFLite Micro and LiteRT on files built here: strides 1-3,
kernels 1×1 to 5×3 (smaller and larger than the stride), SAME and VALID, output shapes that crop
or leave a margin, with and without a bias, a fused RELU, per-channel and per-tensor weights, input
zero points at both ends, and inputs at the int8 extremes. The importer turns it into a zero
insertion then a stride-1 conv2d: the integer reference must equal TFLite Micro on the file, the host
build the reference, and the int8 export the file; re-quantized with NUPES it still runs."""
import numpy as np
import pytest
import torch
from ai_edge_litert import schema_py_generated as S

from nupes_edge import build, tflite_export
from nupes_edge.errors import NupesError
from nupes_edge.importers import import_tflite_bytes
from nupes_edge.interpreters import run_litert, run_tflm
from nupes_edge.intref import run_int
from nupes_edge.layout import from_device, to_device
from nupes_edge.quant.driver import quantize_graph
from nupes_edge.torch_exec import run as run_float


def _out_size(size, k, s, same):
    return size * s if same else (size - 1) * s + k


def transpose_conv_file(rng, hw, cin, cout, k, stride, *, same=True, out_hw=None, bias=True, relu=False,
                        per_channel=True, in_q=(0.05, -3), out_q=(0.08, 5), dtype=np.int8) -> bytes:
    """One TRANSPOSE_CONV as TFLite's converter writes it: inputs (output_shape, OHWI weights, input, bias)."""
    b = tflite_export._Builder()
    (h, w), (kh, kw), (sh, sw) = hw, k, stride
    oh, ow = out_hw or (_out_size(h, kh, sh, same), _out_size(w, kw, sw, same))
    quant = dtype == np.int8
    q = (lambda s, z: dict(scale=s, zp=z)) if quant else (lambda s, z: {})
    x = b.tensor("x", [1, h, w, cin], dtype, **q(*in_q))
    if quant:
        w_scale = np.float32(rng.uniform(0.004, 0.03, cout if per_channel else 1))
        wt = b.tensor("w", [cout, kh, kw, cin], np.int8, rng.integers(-127, 128, (cout, kh, kw, cin)).astype(np.int8),
                      scale=w_scale, zp=np.zeros(len(w_scale), int), axis=0)
    else:
        wt = b.tensor("w", [cout, kh, kw, cin], np.float32, rng.normal(0, 0.3, (cout, kh, kw, cin)).astype(np.float32))
    shape_t = b.tensor("out_shape", [4], np.int32, np.array([1, oh, ow, cout], np.int32))
    ins = [shape_t, wt, x]
    if bias:
        if quant:
            scales = np.float32(in_q[0]) * np.broadcast_to(w_scale, cout).astype(np.float32)
            ins.append(b.tensor("b", [cout], np.int32, rng.integers(-3000, 3001, cout).astype(np.int32),
                                scale=scales, zp=np.zeros(cout, int)))
        else:
            ins.append(b.tensor("b", [cout], np.float32, rng.normal(0, 0.5, cout).astype(np.float32)))
    y = b.tensor("y", [1, oh, ow, cout], dtype, **q(*out_q))
    o = S.TransposeConvOptionsT()
    o.padding = S.Padding.SAME if same else S.Padding.VALID
    o.strideH, o.strideW = sh, sw
    o.fusedActivationFunction = S.ActivationFunctionType.RELU if relu else S.ActivationFunctionType.NONE
    b.op(S.BuiltinOperator.TRANSPOSE_CONV, 3 if bias else 2, ins, [y], S.BuiltinOptions.TransposeConvOptions, o)
    return b.finish([x], [y], "transpose conv test")


# (The output shapes that crop or leave a margin are valid for TFLite Micro, which takes any; LiteRT
# refuses them.)
CASES = {  # name: (input H×W, in channels, out channels, kernel, stride, options)
    "k3_s2_same": ((4, 5), 3, 4, (3, 3), (2, 2), {}),
    "k2_s2_valid": ((3, 3), 2, 5, (2, 2), (2, 2), {"same": False}),
    "k4_s2_same_relu": ((3, 4), 4, 3, (4, 4), (2, 2), {"relu": True, "in_q": (0.1, 127)}),
    "k5x3_s3x1_valid_no_bias": ((2, 4), 3, 2, (5, 3), (3, 1), {"same": False, "bias": False}),
    "k1_s3_same_kernel_below_stride": ((3, 2), 5, 3, (1, 1), (3, 3), {}),
    "k3_s1_same_per_tensor": ((5, 5), 6, 7, (3, 3), (1, 1), {"per_channel": False, "in_q": (0.02, -128)}),
    "k3_s2_output_cropped": ((4, 4), 2, 3, (3, 3), (2, 2), {"same": False, "out_hw": (7, 8)}),
    "k3_s2_output_with_margin": ((3, 3), 2, 2, (3, 3), (2, 2), {"same": False, "out_hw": (9, 8)}),
    # VALID with an output below the kernel: TFLite Micro's out size rounds toward zero (here 0, pad 2) ...
    "k7_s4_valid_output_below_kernel": ((2, 2), 2, 3, (7, 7), (4, 4), {"same": False, "out_hw": (1, 3)}),
    # ... and is negative in one dimension, which leaves both pads at 0
    "k7x3_s1_valid_negative_out_size": ((2, 3), 2, 3, (7, 3), (1, 1), {"same": False, "out_hw": (1, 5)}),
}


def _inputs(rng, h, w, c, n=10):
    x = rng.integers(-128, 128, (n, h, w, c)).astype(np.int8)
    x[0], x[1] = -128, 127  # the extremes
    return x


@pytest.mark.parametrize("case", sorted(CASES))
def test_transpose_conv_equals_tflite_micro_and_the_host_build(case, tmp_path):
    hw, cin, cout, k, stride, opts = CASES[case]
    rng = np.random.default_rng(len(case))
    data = transpose_conv_file(rng, hw, cin, cout, k, stride, **opts)
    g = import_tflite_bytes(data, f"{case}.tflite")
    assert [n.op for n in g.nodes] == ["copy", "conv2d"]
    qm = quantize_graph(g, None, "uniform", 8, name=case)
    x = _inputs(rng, *hw, cin)
    want = run_tflm(data, x)
    xq = from_device(x.reshape(len(x), -1), qm.graph.input_shape)
    ref = to_device(run_int(qm, xq))
    np.testing.assert_array_equal(ref, want)
    assert len(np.unique(want)) > 4, "the case must exercise more than saturated outputs"
    hb = build.build_host(qm, str(tmp_path / "host"), sanitize=True)
    np.testing.assert_array_equal(build.run_host(hb.runner, to_device(xq)), ref)
    again = run_tflm(tflite_export.export(qm, "int8"), x)
    np.testing.assert_array_equal(again, want)  # the exported file is the same model


@pytest.mark.parametrize("case", ["k3_s2_same", "k2_s2_valid", "k4_s2_same_relu", "k5x3_s3x1_valid_no_bias"])
def test_float_transpose_conv_equals_litert_and_quantizes_with_nupes(case):
    hw, cin, cout, k, stride, opts = CASES[case]
    rng = np.random.default_rng(len(case) + 1)
    data = transpose_conv_file(rng, hw, cin, cout, k, stride, dtype=np.float32, **opts)
    g = import_tflite_bytes(data, f"{case}.tflite")
    x = rng.normal(0, 1, (48, *hw, cin)).astype(np.float32)
    want = run_litert(data, x)
    xg = torch.from_numpy(from_device(x.reshape(len(x), -1), g.input_shape).astype(np.float32))
    got = to_device(run_float(g, xg).detach().numpy())
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    # the float export carries the W8 weights: close to the file, not equal
    np.testing.assert_allclose(run_litert(tflite_export.export(quantize_graph(g, xg, "uniform", 8), "float"), x),
                               want, atol=0.05)
    qm = quantize_graph(g, xg[:32], "nupes", 4, name=case)  # calibrated on 32, measured on the other 16
    xin = qm.act[g.input_name]
    y = run_int(qm, np.clip(np.round(xg[32:].numpy() / xin.scale) + xin.zero_point, -128, 127).astype(np.int64))
    out = qm.act[g.output_name]
    real = (y.astype(np.int64) - out.zero_point) * out.scale
    ref = from_device(want[32:], g.output_shape)
    sqnr = 10 * np.log10((ref ** 2).sum() / ((real - ref) ** 2).sum())
    assert sqnr > 15, f"nupes W4 transpose conv SQNR {sqnr:.1f} dB"


def test_output_shape_that_disagrees_with_the_output_tensor_is_refused():
    rng = np.random.default_rng(3)
    m = S.ModelT.InitFromObj(S.Model.GetRootAsModel(transpose_conv_file(rng, (3, 3), 2, 2, (3, 3), (2, 2)), 0))
    shape_t = m.subgraphs[0].tensors[m.subgraphs[0].operators[0].inputs[0]]
    m.buffers[shape_t.buffer].data = np.array([1, 5, 6, 2], np.int32).view(np.uint8)
    import flatbuffers

    fb = flatbuffers.Builder(1024)
    fb.Finish(m.Pack(fb), file_identifier=b"TFL3")
    with pytest.raises(NupesError, match=r"operator 0 \(TRANSPOSE_CONV\): output shape input \[1, 5, 6, 2\]"):
        import_tflite_bytes(bytes(fb.Output()), "bad.tflite")


TORCH_CASES = {  # name: (module, input shape)
    "convtranspose2d_s2_p1_outpad1": (lambda: torch.nn.ConvTranspose2d(3, 4, 3, stride=2, padding=1, output_padding=1),
                                      (1, 3, 5, 4)),
    "convtranspose2d_k4_s2_p1_no_bias_relu": (lambda: torch.nn.Sequential(
        torch.nn.ConvTranspose2d(2, 3, (4, 2), stride=(2, 3), padding=(1, 0), bias=False), torch.nn.ReLU()), (1, 2, 4, 3)),
    "convtranspose2d_padding_beyond_kernel_crops": (lambda: torch.nn.ConvTranspose2d(2, 2, 2, stride=3, padding=2),
                                                    (1, 2, 4, 4)),
    "convtranspose1d_s2": (lambda: torch.nn.ConvTranspose1d(4, 3, 5, stride=2, padding=2, output_padding=1), (1, 4, 7)),
}


@pytest.mark.parametrize("case", sorted(TORCH_CASES))
def test_pytorch_conv_transpose_imports_to_the_same_float_model_and_runs_bit_exact(case, tmp_path):
    from nupes_edge.importers import import_module

    torch.manual_seed(len(case))
    make, shape = TORCH_CASES[case]
    m = make().eval()
    x = torch.randn(40, *shape[1:])
    g = import_module(m, x[:1], name=case)
    assert any(n.op == "copy" and n.attrs.get("fill") for n in g.nodes)
    xg = x if x.ndim == 4 else x[:, :, None, :]
    with torch.no_grad():
        want = m(x).reshape(len(x), -1).numpy()
        got = run_float(g, xg).reshape(len(x), -1).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    qm = quantize_graph(g, xg[:32], "nupes", 4, name=case)
    xin = qm.act[g.input_name]
    xq = np.clip(np.round(xg.numpy() / xin.scale) + xin.zero_point, -128, 127).astype(np.int64)
    ref = run_int(qm, xq)
    hb = build.build_host(qm, str(tmp_path / "host"), sanitize=True)
    np.testing.assert_array_equal(build.run_host(hb.runner, to_device(xq)), to_device(ref))
    out = qm.act[g.output_name]
    real = (ref[32:].astype(np.int64) - out.zero_point) * out.scale
    sqnr = 10 * np.log10((want[32:] ** 2).sum() / ((real.reshape(8, -1) - want[32:]) ** 2).sum())
    assert sqnr > 15, f"nupes W4 SQNR {sqnr:.1f} dB against PyTorch"


@pytest.mark.skipif(__import__("shutil").which("qemu-system-arm") is None, reason="make setup installs qemu-system-arm")
def test_kept_transpose_conv_on_the_emulated_stm32_equals_the_file(tmp_path):
    """On the board, through `run`: equal to the reference and (the verify oracle) to TFLite Micro on the file."""
    from nupes_edge import api, artifact

    hw, cin, cout, k, stride, opts = CASES["k4_s2_same_relu"]
    data = transpose_conv_file(np.random.default_rng(9), hw, cin, cout, k, stride, **opts)
    qm = quantize_graph(import_tflite_bytes(data, "tc.tflite"), None, "uniform", 8, name="m")
    artifact.save(qm, str(tmp_path / "m.nq"))
    _, rep = api.run_emulated(str(tmp_path / "m.nq"), "stm32", str(tmp_path / "out"), "random", 10, progress=False)
    assert rep.n == 10 and rep.mismatches == 0 and rep.original["mismatches"] == 0


def test_keras_output_shape_computed_from_the_input_shape(tmp_path):
    """Keras' Conv2DTranspose with a free batch writes its output shape as SHAPE(x) -> STRIDED_SLICE (the
    batch) -> PACK with the constant sizes: folded at import, the same model as TFLite Micro's."""
    from tests.test_tflite_moves_tflm import Model, _int_act, _ints, pack, strided_slice

    rng = np.random.default_rng(17)
    m = Model()
    x = m.act([1, 3, 4, 2], 0.05, -3)
    shape = _int_act(m, [4])
    m.b.op(S.BuiltinOperator.SHAPE, 1, [x], [shape], S.BuiltinOptions.ShapeOptions, S.ShapeOptionsT())
    batch = _int_act(m, [])
    strided_slice(m, shape, batch, [0], [1], [1], shrink=1)
    out_shape = _int_act(m, [4])
    pack(m, [batch, _ints(m, 6), _ints(m, 8), _ints(m, 3)], out_shape, 0)
    w_scale = np.float32(rng.uniform(0.004, 0.03, 3))
    wt = m.b.tensor("w", [3, 3, 3, 2], np.int8, rng.integers(-127, 128, (3, 3, 3, 2)).astype(np.int8),
                    scale=w_scale, zp=np.zeros(3, int), axis=0)
    bt = m.b.tensor("b", [3], np.int32, rng.integers(-2000, 2001, 3).astype(np.int32),
                    scale=np.float32(0.05) * w_scale, zp=np.zeros(3, int))
    y = m.act([1, 6, 8, 3], 0.08, 5)
    o = S.TransposeConvOptionsT()
    o.padding, o.strideH, o.strideW = S.Padding.SAME, 2, 2
    m.b.op(S.BuiltinOperator.TRANSPOSE_CONV, 3, [out_shape, wt, x, bt], [y], S.BuiltinOptions.TransposeConvOptions, o)
    data = m.finish(x, y)
    qm = quantize_graph(import_tflite_bytes(data, "keras.tflite"), None, "uniform", 8)
    xs = _inputs(rng, 3, 4, 2)
    np.testing.assert_array_equal(to_device(run_int(qm, from_device(xs.reshape(len(xs), -1), qm.graph.input_shape))),
                                  run_tflm(data, xs))
