"""Operators and shapes of the public microcontroller models, built by hand as int8 .tflite files
(no TensorFlow, no file from elsewhere) and checked against TFLite Micro's own kernels: the kept
model's integer reference, its host build and its int8 export give exactly the bytes TFLite Micro
gives on the original file, on random and edge-case inputs.

Covered: MEAN that changes the scale (with and without keep_dims, over H x W and over the time
axis of a rank-3 tensor), RESHAPE of a flat input to N x H x W x C, FULLY_CONNECTED on a rank-4
input, an int8 -> int8 QUANTIZE, DEQUANTIZE after the final SOFTMAX (float outputs), a 1-D bias whose
quantization names a per-channel axis it does not have, and declared shapes that disagree."""
import numpy as np
import pytest
from ai_edge_litert import schema_py_generated as S

from nupes_edge import build, tflite_export
from nupes_edge.errors import NupesError
from nupes_edge.importers import import_tflite_bytes
from nupes_edge.interpreters import run_tflm
from nupes_edge.intref import run_int
from nupes_edge.layout import from_device, to_device
from nupes_edge.oracle import run_source
from nupes_edge.quant.driver import quantize_graph

RNG = np.random.default_rng(7)


class Model:
    """A tiny int8 .tflite writer over tflite_export._Builder."""

    def __init__(self):
        self.b = tflite_export._Builder()

    def act(self, shape, scale, zp, dtype=np.int8):
        quantized = dtype in (np.int8, np.uint8)
        return self.b.tensor(f"t{len(self.b.tensors)}", shape, dtype,
                             scale=scale if quantized else None, zp=zp if quantized else None)

    def weights(self, shape, axis):
        w = RNG.integers(-127, 128, shape).astype(np.int8)
        n = shape[axis]
        scale = RNG.uniform(0.002, 0.02, n).astype(np.float32)
        return self.b.tensor(f"w{len(self.b.tensors)}", shape, np.int8, w, scale=scale, zp=np.zeros(n, int), axis=axis), scale

    def bias(self, n, in_scale, w_scale, axis=0, big=False):
        vals = RNG.integers(-3000, 3000, n).astype(np.int32)
        if big:
            vals[0] = (1 << 30) + 128  # beyond 2^30, as in MLPerf Tiny's VWW file
        return self.b.tensor(f"b{len(self.b.tensors)}", [n], np.int32, vals, scale=np.float32(in_scale) * w_scale,
                             zp=np.zeros(n, int), axis=axis)

    def conv(self, x, x_scale, shape_in, c_out, out, depthwise=False, mult=1):
        h, w, c = shape_in
        if depthwise:
            wt, ws = self.weights([1, 3, 3, c * mult], axis=3)
            opts = S.DepthwiseConv2DOptionsT()
            opts.depthMultiplier = mult
            code, ot = S.BuiltinOperator.DEPTHWISE_CONV_2D, S.BuiltinOptions.DepthwiseConv2DOptions
            c_out = c * mult
        else:
            wt, ws = self.weights([c_out, 3, 3, c], axis=0)
            opts = S.Conv2DOptionsT()
            code, ot = S.BuiltinOperator.CONV_2D, S.BuiltinOptions.Conv2DOptions
        opts.padding, opts.strideH, opts.strideW = S.Padding.SAME, 1, 1
        opts.dilationHFactor = opts.dilationWFactor = 1
        opts.fusedActivationFunction = S.ActivationFunctionType.RELU
        self.b.op(code, 3, [x, wt, self.bias(c_out, x_scale, ws)], [out], ot, opts)

    def fc(self, x, x_scale, k, n, out, bias_axis=0, big_bias=False):
        wt, ws = self.weights([n, k], axis=0)
        self.b.op(S.BuiltinOperator.FULLY_CONNECTED, 9, [x, wt, self.bias(n, x_scale, ws, bias_axis, big_bias)], [out],
                  S.BuiltinOptions.FullyConnectedOptions, S.FullyConnectedOptionsT())

    def mean(self, x, axes, keep, out):
        opts = S.ReducerOptionsT()
        opts.keepDims = keep
        ax = self.b.tensor(f"axes{len(self.b.tensors)}", [len(axes)], np.int32, np.array(axes, np.int32))
        self.b.op(S.BuiltinOperator.MEAN, 2, [x, ax], [out], S.BuiltinOptions.ReducerOptions, opts)

    def reshape(self, x, shape, out):
        opts = S.ReshapeOptionsT()
        opts.newShape = list(shape)
        st = self.b.tensor(f"shape{len(self.b.tensors)}", [len(shape)], np.int32, np.array(shape, np.int32))
        self.b.op(S.BuiltinOperator.RESHAPE, 1, [x, st], [out], S.BuiltinOptions.ReshapeOptions, opts)

    def softmax(self, x, out):
        opts = S.SoftmaxOptionsT()
        opts.beta = 1.0
        self.b.op(S.BuiltinOperator.SOFTMAX, 2, [x], [out], S.BuiltinOptions.SoftmaxOptions, opts)

    def finish(self, x, y):
        return self.b.finish([x], [y], "hand-built int8")


def st_like(mean_out_scale: float, keep_dims: bool) -> bytes:
    """ST model zoo's shape: conv, MEAN to its own scale, dense, softmax, DEQUANTIZE (float out)."""
    m = Model()
    x = m.act([1, 7, 7, 3], 0.02, -3)
    c = m.act([1, 7, 7, 8], 0.05, -128)
    m.conv(x, 0.02, (7, 7, 3), 8, c)
    pooled = m.act([1, 1, 1, 8] if keep_dims else [1, 8], mean_out_scale, 5)
    m.mean(c, [1, 2], keep_dims, pooled)
    flat = pooled
    if keep_dims:
        flat = m.act([1, 8], mean_out_scale, 5)
        m.reshape(pooled, [1, 8], flat)
    logits = m.act([1, 4], 0.1, 2)
    m.fc(flat, mean_out_scale, 8, 4, logits)
    probs = m.act([1, 4], 1.0 / 256, -128)
    m.softmax(logits, probs)
    out = m.act([1, 4], None, None, np.float32)
    m.b.op(S.BuiltinOperator.DEQUANTIZE, 2, [probs], [out])
    return m.finish(x, out)


def flat_input_requantize_and_wide_dense(big_bias: bool = False) -> bytes:
    """micro_speech's shape (a flat input reshaped to N x H x W x C), a depthwise conv with a depth
    multiplier, an int8 -> int8 QUANTIZE, MEAN keeping its dims, and FULLY_CONNECTED straight on a
    rank-4 tensor whose 1-D bias says quantized_dimension 3 (TFLite Micro's person_detect does)."""
    m = Model()
    x = m.act([1, 48], 0.03, 10)
    img = m.act([1, 4, 4, 3], 0.03, 10)
    m.reshape(x, [1, 4, 4, 3], img)
    d = m.act([1, 4, 4, 6], 0.04, -128)
    m.conv(img, 0.03, (4, 4, 3), 6, d, depthwise=True, mult=2)
    rq = m.act([1, 4, 4, 6], 0.09, -100)
    m.b.op(S.BuiltinOperator.QUANTIZE, 2, [d], [rq])
    logits = m.act([1, 5], 0.2, 0)
    m.fc(rq, 0.09, 96, 5, logits, bias_axis=3, big_bias=big_bias)
    return m.finish(x, logits)


def sequence_mean() -> bytes:
    """A rank-3 N x T x C input averaged over time (MEAN over axis 1, no keep_dims), then dense."""
    m = Model()
    x = m.act([1, 9, 5], 0.05, 0)
    pooled = m.act([1, 5], 0.013, -20)
    m.mean(x, [1], False, pooled)
    out = m.act([1, 3], 0.05, 1)
    m.fc(pooled, 0.013, 5, 3, out)
    return m.finish(x, out)


def uint8_in_float_out() -> bytes:
    """ST model zoo's edges: a uint8 image in (QUANTIZE to int8: the zero point moved by 128), float
    probabilities out (DEQUANTIZE after the SOFTMAX)."""
    m = Model()
    x = m.act([1, 6, 6, 3], 0.0078125, 127, np.uint8)
    xi = m.act([1, 6, 6, 3], 0.0078125, -1)
    m.b.op(S.BuiltinOperator.QUANTIZE, 2, [x], [xi])
    c = m.act([1, 6, 6, 4], 0.05, -128)
    m.conv(xi, 0.0078125, (6, 6, 3), 4, c)
    flat = m.act([1, 144], 0.05, -128)
    m.reshape(c, [1, 144], flat)
    logits = m.act([1, 3], 0.1, 0)
    m.fc(flat, 0.05, 144, 3, logits)
    probs = m.act([1, 3], 1.0 / 256, -128)
    m.softmax(logits, probs)
    out = m.act([1, 3], None, None, np.float32)
    m.b.op(S.BuiltinOperator.DEQUANTIZE, 2, [probs], [out])
    return m.finish(x, out)


def uint8_in_uint8_out() -> bytes:
    """uint8 at both edges: QUANTIZE uint8 -> int8 first, int8 -> uint8 last (zero points moved by 128)."""
    m = Model()
    x = m.act([1, 5, 5, 2], 0.02, 130, np.uint8)
    xi = m.act([1, 5, 5, 2], 0.02, 2)
    m.b.op(S.BuiltinOperator.QUANTIZE, 2, [x], [xi])
    c = m.act([1, 5, 5, 3], 0.05, -128)
    m.conv(xi, 0.02, (5, 5, 2), 3, c)
    flat = m.act([1, 75], 0.05, -128)
    m.reshape(c, [1, 75], flat)
    logits = m.act([1, 4], 0.1, -7)
    m.fc(flat, 0.05, 75, 4, logits)
    out = m.act([1, 4], 0.1, 121, np.uint8)
    m.b.op(S.BuiltinOperator.QUANTIZE, 2, [logits], [out])
    return m.finish(x, out)


def mul_silu_and_squeeze_excite(relu: bool = False) -> bytes:
    """MUL in both shapes the public models use it: x * sigmoid(x) (elementwise, equal shapes), then a
    squeeze-and-excite scale (a [1, 1, 1, C] operand broadcast over H x W)."""
    m = Model()
    x = m.act([1, 5, 5, 3], 0.04, 3)
    c = m.act([1, 5, 5, 6], 0.06, -20)
    m.conv(x, 0.04, (5, 5, 3), 6, c)
    sg = m.act([1, 5, 5, 6], 1.0 / 256, -128)
    m.b.op(S.BuiltinOperator.LOGISTIC, 2, [c], [sg])
    silu = m.act([1, 5, 5, 6], 0.03, -7)
    opts = S.MulOptionsT()
    opts.fusedActivationFunction = S.ActivationFunctionType.RELU if relu else S.ActivationFunctionType.NONE
    m.b.op(S.BuiltinOperator.MUL, 2, [c, sg], [silu], S.BuiltinOptions.MulOptions, opts)
    pooled = m.act([1, 1, 1, 6], 0.02, -9)
    m.mean(silu, [1, 2], True, pooled)
    flat = m.act([1, 6], 0.02, -9)
    m.reshape(pooled, [1, 6], flat)
    z = m.act([1, 6], 0.07, 4)
    m.fc(flat, 0.02, 6, 6, z)
    z4 = m.act([1, 1, 1, 6], 0.07, 4)
    m.reshape(z, [1, 1, 1, 6], z4)
    gate = m.act([1, 1, 1, 6], 1.0 / 256, -128)
    m.b.op(S.BuiltinOperator.LOGISTIC, 2, [z4], [gate])
    scaled = m.act([1, 5, 5, 6], 0.025, -11)
    m.b.op(S.BuiltinOperator.MUL, 2, [silu, gate], [scaled], S.BuiltinOptions.MulOptions, S.MulOptionsT())
    final = m.act([1, 1, 1, 6], 0.01, 0)
    m.mean(scaled, [1, 2], True, final)
    out = m.act([1, 6], 0.01, 0)
    m.reshape(final, [1, 6], out)
    return m.finish(x, out)


def tflm_rows(data: bytes, xq: np.ndarray) -> np.ndarray:
    return run_tflm(data, to_device(xq))


def reference_rows(qm, xq: np.ndarray, float_out: bool) -> np.ndarray:
    y = run_int(qm, xq)
    y = to_device(y) if y.ndim == 4 else y.reshape(len(y), -1)
    if float_out:  # TFLite's DEQUANTIZE: float32 scale times the int8 value minus the zero point
        q = qm.output_q
        return np.float32(q.scale) * (y.astype(np.float32) - np.float32(q.zero_point))
    return y


def inputs(g, n=40):
    xq = RNG.integers(-128, 128, (n, *g.input_shape)).astype(np.int8)
    xq[0], xq[1] = -128, 127  # the extremes: every sum at its bound
    return xq


CASES = {
    "mean-rescale-flat-0.5x": (lambda: st_like(0.025, False), True),
    "mean-rescale-keepdims-3x": (lambda: st_like(0.15, True), True),
    "mean-rescale-keepdims-0.37x": (lambda: st_like(0.0185, True), True),
    "flat-input-requantize-dense-4d": (flat_input_requantize_and_wide_dense, False),
    "bias-beyond-2^30": (lambda: flat_input_requantize_and_wide_dense(big_bias=True), False),
    "sequence-mean": (sequence_mean, False),
    "uint8-in-float-out": (uint8_in_float_out, True),
    "uint8-in-uint8-out": (uint8_in_uint8_out, False),
    "mul-silu-and-squeeze-excite": (mul_silu_and_squeeze_excite, False),
    "mul-with-fused-relu": (lambda: mul_silu_and_squeeze_excite(relu=True), False),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_kept_model_equals_tflite_micro_on_reference_host_and_export(case, tmp_path):
    make, float_out = CASES[case]
    data = make()
    g = import_tflite_bytes(data, f"{case}.tflite")
    qm = quantize_graph(g, None, "uniform", 8, name="m")
    assert qm.meta["kept_from_file"]["weights"].startswith("int8 weights")
    xq = inputs(g)
    want = run_source(data, to_device(xq), qm.input_q)  # a uint8 file gets the same codes + 128
    if want.dtype == np.uint8:  # ... and gives them + 128
        want = (want.astype(np.int16) - 128).astype(np.int8)
    ref = reference_rows(qm, xq, float_out)
    assert ref.shape == want.shape
    np.testing.assert_array_equal(ref, want)
    # the host build (portable C) gives the reference's bytes
    hb = build.build_host(qm, str(tmp_path / "host"))
    dev = build.run_host(hb.runner, to_device(xq))
    np.testing.assert_array_equal(from_device(dev, qm.graph.output_shape), run_int(qm, xq))
    # the kept model exported again computes what the original file computes
    again = tflite_export.export(qm, "int8")
    got = tflm_rows(again, xq)
    if float_out:
        q = qm.output_q
        got = np.float32(q.scale) * (got.astype(np.float32) - np.float32(q.zero_point))
    np.testing.assert_array_equal(got, want)


def test_the_mean_is_not_a_plain_average_when_the_scale_changes():
    """The bug this file guards: a MEAN to another scale, read as a plain average in the input's."""
    data = st_like(0.025, False)
    g = import_tflite_bytes(data, "st.tflite")
    assert [n.op for n in g.nodes][:3] == ["conv2d", "mean", "reshape"]
    qm = quantize_graph(g, None, "uniform", 8, name="m", keep_softmax=False)
    p = qm.params[g.nodes[1].name]
    assert (p.in_zp, p.out_zp, p.count) == (-128, 5, 49)
    assert p.mult != 0 and p.shift < 0


def test_declared_shapes_that_disagree_are_refused():
    m = Model()
    x = m.act([1, 4, 4, 3], 0.02, 0)
    out = m.act([1, 1, 1, 2], 0.02, 0)  # a MEAN keeps the 3 channels: the file says 2
    m.mean(x, [1, 2], True, out)
    with pytest.raises(NupesError, match="declared shape"):
        import_tflite_bytes(m.finish(x, out), "bad.tflite")


def test_every_unsupported_operator_is_named_at_once():
    m = Model()
    x = m.act([1, 4], 0.02, 0)
    y = m.act([1, 4], 0.02, 0)
    z = m.act([1, 4], 0.02, 0)
    m.b.op(S.BuiltinOperator.ELU, 1, [x], [y])
    m.b.op(S.BuiltinOperator.SQUARE, 1, [y], [z])
    with pytest.raises(NupesError) as e:
        import_tflite_bytes(m.finish(x, z), "two.tflite")
    assert "ELU (operator 0)" in str(e.value) and "SQUARE (operator 1)" in str(e.value)


def test_verify_fails_a_kept_model_that_computes_something_else_than_its_file(tmp_path):
    """One operator broken on purpose (the MEAN made a plain average in the input's scale, the old
    bug): the C code and the integer reference still agree with each other, but the original file
    under TFLite Micro does not, so verify (host) and eval exit 1; the intact model passes."""
    import json

    from nupes_edge import artifact
    from nupes_edge.quant.lower import mean_params
    from tests.test_cli import cli

    (tmp_path / "st.tflite").write_bytes(st_like(0.025, False))
    r = cli("quantize", "st.tflite", "--method", "uniform", "--wbits", "8", "-o", "good.nq", "--quiet", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    qm = artifact.load(str(tmp_path / "good.nq"))
    mean = next(n for n in qm.graph.nodes if n.op == "mean")
    p = qm.params[mean.name]
    p.mult, p.shift = mean_params(p.count, 1.0, 1.0)  # the input's own scale
    p.out_zp = p.in_zp
    artifact.save(qm, str(tmp_path / "broken.nq"))
    ok = cli("verify", "good.nq", "--board", "host", "--data", "random", "-n", "30", "--json", cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["original"] == {"what": "kept", "mismatches": 0, "agreement": 1.0,
                                                  "sqnr_db": float("inf"), "note": ""}
    bad = cli("verify", "broken.nq", "--board", "host", "--data", "random", "-n", "30", cwd=tmp_path)
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert "mismatches        0" in bad.stdout  # the C code agrees with the (broken) reference ...
    assert "differ from the original .tflite" in bad.stdout  # ... and the file says otherwise
    assert cli("eval", "broken.nq", "--data", "random", cwd=tmp_path).returncode == 1


def test_docs_operator_table_is_the_importers_own():
    import os

    from nupes_edge.importers.tflite_import import operator_table_markdown

    doc = open(os.path.join(os.path.dirname(__file__), "..", "docs", "tflite.md"), encoding="utf-8").read()
    block = doc.split("<!-- operators:begin -->\n", 1)[1].split("<!-- operators:end -->", 1)[0]
    assert block == operator_table_markdown()


@pytest.mark.skipif(__import__("shutil").which("qemu-system-arm") is None, reason="make setup installs qemu-system-arm")
@pytest.mark.parametrize("case", ["mul-silu-and-squeeze-excite", "mean-rescale-flat-0.5x", "uint8-in-float-out"])
def test_new_operators_on_the_emulated_stm32(case, tmp_path):
    """MUL, MEAN to another scale, and the uint8 / float edges, on the board: equal to the reference
    and (the verify oracle) to TFLite Micro on the file."""
    from nupes_edge import api, artifact

    qm = quantize_graph(import_tflite_bytes(CASES[case][0](), f"{case}.tflite"), None, "uniform", 8, name="m")
    artifact.save(qm, str(tmp_path / "m.nq"))
    _, rep = api.run_emulated(str(tmp_path / "m.nq"), "stm32", str(tmp_path / "out"), "random", 10, progress=False)
    assert rep.n == 10 and rep.mismatches == 0 and rep.original["mismatches"] == 0


@pytest.mark.parametrize("scale,zp", [(0.0, 0), (-0.5, 0), (float("nan"), 0), (float("inf"), 0), (0.1, 300)])
def test_bad_activation_quantization_is_named(scale, zp):
    """A scale of 0, negative, NaN or infinite, or a zero point outside int8, is the file's mistake: a
    clear error naming the tensor (it used to reach the lowering and exit 3)."""
    m = Model()
    x = m.b.tensor("x", [1, 4], np.int8, scale=0.1, zp=0)
    y = m.b.tensor("bad", [1, 4], np.int8, scale=scale, zp=zp)
    m.b.op(S.BuiltinOperator.RELU, 1, [x], [y])
    with pytest.raises(NupesError, match="'bad'"):
        quantize_graph(import_tflite_bytes(m.finish(x, y), "bad.tflite"), None, "uniform", 8)


def test_negative_weight_scales_are_named():
    """Found by mutating these files: a negative per-channel weight scale reached the lowering (exit 3)."""
    m = Model()
    x = m.act([1, 4], 0.1, 0)
    y = m.act([1, 2], 0.1, 0)
    w = m.b.tensor("w", [2, 4], np.int8, np.ones((2, 4), np.int8), scale=np.array([0.01, -0.01], np.float32),
                   zp=np.zeros(2, int), axis=0)
    bias = m.b.tensor("b", [2], np.int32, np.zeros(2, np.int32), scale=np.array([1e-3, 1e-3], np.float32),
                      zp=np.zeros(2, int))
    m.b.op(S.BuiltinOperator.FULLY_CONNECTED, 9, [x, w, bias], [y], S.BuiltinOptions.FullyConnectedOptions,
           S.FullyConnectedOptionsT())
    with pytest.raises(NupesError, match="weight scales"):
        quantize_graph(import_tflite_bytes(m.finish(x, y), "neg.tflite"), None, "uniform", 8)


@pytest.mark.parametrize("op,scale,zp", [(S.BuiltinOperator.LOGISTIC, 1.0 / 128, 0), (S.BuiltinOperator.TANH, 1.0 / 256, -128),
                                         (S.BuiltinOperator.SOFTMAX, 0.1, 0)])
def test_fixed_output_quantization_is_checked(op, scale, zp):
    """LOGISTIC, TANH and SOFTMAX have the int8 output quantization TFLite Micro requires, or the file
    is refused (it would compute something TFLite Micro refuses to)."""
    m = Model()
    x = m.act([1, 4], 0.05, 0)
    y = m.act([1, 4], scale, zp)
    m.b.op(op, 2, [x], [y])
    with pytest.raises(NupesError, match="output quantization .* as TFLite Micro requires"):
        import_tflite_bytes(m.finish(x, y), "fixed.tflite")
