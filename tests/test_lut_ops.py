"""TFLite Micro's int8 LOGISTIC, TANH, HARD_SWISH and LEAKY_RELU as 256-entry tables
(nupes_edge/intref/lut_ops.py) against the real TFLite Micro interpreter, bit for bit: one-op models
whose int8 [1, 256] input holds every int8 value once, over many input and output quantizations."""
from __future__ import annotations

import math

import numpy as np
import pytest

from nupes_edge.intref import lut_ops
from nupes_edge.intref.fixedpoint import (
    multiply_by_quantized_multiplier,
    quantize_multiplier,
)

ALL_INPUTS = np.arange(-128, 128, dtype=np.int8)[None]  # one row: every int8 value once

# (input scale, input zero point): 1/512 .. 1.0, zero points -128 .. 127, powers of two, x/255 scales
# as min/max calibration gives them, decimal scales that float32 cannot hold exactly.
IN_QUANT = [(1 / 512, 0), (1 / 512, -128), (1 / 256, 127), (1 / 255, -128), (0.0078125, 0), (0.01, -37),
            (6 / 255, -128), (0.03125, 64), (0.05, 100), (12 / 255, 0), (0.0625, -1), (0.1, 5), (0.125, -128),
            (0.15, 127), (0.2, -60), (0.25, 30), (0.3, -3), (0.5, 10), (0.7, -100), (0.75, 127), (1.0, 0),
            (1.0, -128), (0.251953125, 9), (0.50390625, 72)]
_rng = np.random.default_rng(20240611)
IN_QUANT += [(float(np.exp(_rng.uniform(math.log(1 / 512), 0))), int(_rng.integers(-128, 128))) for _ in range(12)]
# LOGISTIC / TANH only: scales whose input radius is tiny (16.0: radius 0, every input saturates) or huge.
EXTREME_IN_QUANT = [(2.0, 0), (4.0, 3), (8.0, -7), (16.0, 0), (2.0 ** -20, 0), (2.0 ** -27, 11)]

# Output quantizations for HARD_SWISH / LEAKY_RELU, combined with every input quantization in turn.
OUT_QUANT = [(0.05, -100), (1 / 64, 3), (0.1, 0), (3 / 255, -128), (0.3, 60), (1 / 512, 127), (0.02, -20)]

# HARD_SWISH cases named for what they exercise:
HARD_SWISH_EXTRA = [
    ((1 / 512, 0), (2.0, 0)),  # output exponent -16: gemmlowp's int16 RoundingDivideByPOT mask wraps
    ((1 / 512, -50), (4.0, 7)),  # exponent -17
    ((1 / 512, 0), (1.0, 0)),  # exponent -15: the last one before the wrap
    ((0.5, 0), (0.5 / 100, -128)),  # in / out = 100: output exponent 0, the largest TFLite Micro accepts
    ((1.0, 0), (1 / 127, 5)),  # in / out = 127
    ((0.251953125, 9), (4 / 255, -32)),  # a float32 division of the scales would be 1 LSB off
    ((0.50390625, 72), (32 / 255, -51)),  # same
    ((2.0, 0), (0.2, 0)), ((1e-3, 0), (1e-3, 0)),
]
# LEAKY_RELU cases where float32 arithmetic on the scales (the older TFLite Micro sources) is 1 LSB off.
LEAKY_F32_CASES = [(0.01, (1 / 512, -128), (0.05, -100)), (0.1, (18 / 255, -52), (2 / 255, -23)),
                   (0.2, (55 / 255, -2), (20 / 255, -88))]
ALPHAS = [0.01, 0.1, 0.2, 0.5]


def _need_tflm():
    try:
        import ai_edge_litert.schema_py_generated  # noqa: F401  (builds the test models)
        import tflite_micro  # noqa: F401
    except ImportError as e:
        pytest.skip(f"TFLite Micro comparison needs the tflite_micro and ai_edge_litert packages: {e}")


def one_op_model(op: str, in_q: tuple[float, int], out_q: tuple[float, int], alpha: float | None = None) -> bytes:
    """A .tflite file holding one int8 ``op`` (LOGISTIC, TANH, HARD_SWISH or LEAKY_RELU): [1, 256] -> [1, 256]."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as S

    def tensor(name, buffer, q):
        t = S.TensorT()
        t.name, t.shape, t.type, t.buffer = name, [1, 256], S.TensorType.INT8, buffer
        t.quantization = S.QuantizationParametersT()
        t.quantization.scale, t.quantization.zeroPoint = [q[0]], [q[1]]
        return t

    code = S.OperatorCodeT()
    code.builtinCode = code.deprecatedBuiltinCode = getattr(S.BuiltinOperator, op)
    code.version = 1 if op == "HARD_SWISH" else 2
    o = S.OperatorT()
    o.opcodeIndex, o.inputs, o.outputs = 0, [0], [1]
    if op == "LEAKY_RELU":
        o.builtinOptionsType = S.BuiltinOptions.LeakyReluOptions
        o.builtinOptions = S.LeakyReluOptionsT()
        o.builtinOptions.alpha = alpha
    sg = S.SubGraphT()
    sg.tensors = [tensor("x", 1, in_q), tensor("y", 2, out_q)]
    sg.operators, sg.inputs, sg.outputs, sg.name = [o], [0], [1], "main"
    m = S.ModelT()
    m.version, m.description = 3, f"nupes-edge {op} test"
    m.operatorCodes, m.subgraphs, m.buffers = [code], [sg], [S.BufferT() for _ in range(3)]
    b = flatbuffers.Builder(1024)
    b.Finish(m.Pack(b), file_identifier=b"TFL3")
    return bytes(b.Output())


def tflm_table(op: str, in_q, out_q, alpha=None) -> np.ndarray:
    from nupes_edge.interpreters import run_tflm

    return run_tflm(one_op_model(op, in_q, out_q, alpha), ALL_INPUTS)[0]


def _compare(cases) -> tuple[int, list[str]]:
    """cases: (label, table function, TFLM op, in_q, out_q, alpha); (count, mismatch reports)."""
    bad = []
    for label, fn, op, in_q, out_q, alpha in cases:
        got = fn()
        want = tflm_table(op, in_q, out_q, alpha)
        assert got.dtype == np.int8 and got.shape == (256,)
        diff = np.flatnonzero(got != want)
        if diff.size:
            bad.append(f"{label}: {diff.size} inputs differ, e.g. input {diff[0] - 128}: {got[diff[0]]} vs "
                       f"TFLM {want[diff[0]]}")
    return len(cases), bad


@pytest.mark.parametrize("op", ["logistic", "tanh"])
def test_logistic_tanh_match_tflite_micro(op):
    _need_tflm()
    fn = {"logistic": lut_ops.logistic_table, "tanh": lut_ops.tanh_table}[op]
    out_q = lut_ops.OUTPUT_QUANT[op]
    cases = [(f"{op} in {q}", lambda q=q: fn(*q, *out_q), op.upper(), q, out_q, None)
             for q in IN_QUANT + EXTREME_IN_QUANT]
    n, bad = _compare(cases)
    assert n >= 40 and not bad, "\n".join(bad)


def test_hard_swish_matches_tflite_micro():
    _need_tflm()
    outs = [o for o in OUT_QUANT for _ in range(2)]
    pairs = [(q, next(o for o in outs[i % len(outs):] + outs if q[0] / o[0] < 100)) for i, q in enumerate(IN_QUANT)]
    pairs += [(q, q) for q in IN_QUANT[::3]]  # output quantization = input quantization
    pairs += HARD_SWISH_EXTRA
    cases = [(f"hard_swish in {i} out {o}", lambda i=i, o=o: lut_ops.hard_swish_table(*i, *o), "HARD_SWISH", i, o,
              None) for i, o in pairs]
    n, bad = _compare(cases)
    assert n >= 40 and not bad, "\n".join(bad)


def test_leaky_relu_matches_tflite_micro():
    _need_tflm()
    cases = []
    for k, alpha in enumerate(ALPHAS):
        for i, in_q in enumerate(IN_QUANT):
            out_q = OUT_QUANT[(i + k) % len(OUT_QUANT)] if (i + k) % 4 else in_q
            cases.append((alpha, in_q, out_q))
    cases += [(a, (0.1, 5), (0.05, -10)) for a in (-0.3, 0.0, 1.5, 1.0)]  # negative, zero, > 1
    cases += LEAKY_F32_CASES
    n, bad = _compare([(f"leaky_relu alpha {a} in {i} out {o}",
                        lambda a=a, i=i, o=o: lut_ops.leaky_relu_table(a, *i, *o), "LEAKY_RELU", i, o, a)
                       for a, i, o in cases])
    assert n >= 100 and not bad, "\n".join(bad)


def test_int16_rounding_quirk_of_hard_swish():
    """With an output exponent <= -16 gemmlowp's int16 RoundingDivideByPOT gives +1 for every
    non-negative value: hard-swish(0) comes out as zero point + 1, in TFLite Micro too."""
    _need_tflm()
    assert lut_ops.hard_swish_params(1 / 512, 2.0)[1] == -16
    table = lut_ops.hard_swish_table(1 / 512, 0, 2.0, 0)
    assert table[128] == 1 and set(np.unique(table)) == {-1, 1}
    np.testing.assert_array_equal(table, tflm_table("HARD_SWISH", (1 / 512, 0), (2.0, 0)))


def test_scales_are_combined_in_double():
    """float32 division of the scales (the tflite-micro sources up to August 2026) would be 1 LSB
    off in these cases; the pinned TFLite Micro divides the float32 values in double."""
    _need_tflm()
    for alpha, (s_in, zp_in), (s_out, zp_out) in LEAKY_F32_CASES:
        f32 = np.float32
        x = np.arange(-128, 128, dtype=np.int64) - zp_in
        ident = quantize_multiplier(float(f32(s_in) / f32(s_out)))
        alph = quantize_multiplier(float(f32(s_in) * f32(alpha) / f32(s_out)))
        y = np.where(x >= 0, multiply_by_quantized_multiplier(x, *ident), multiply_by_quantized_multiplier(x, *alph))
        float32_table = np.clip(zp_out + y, -128, 127)
        want = tflm_table("LEAKY_RELU", (s_in, zp_in), (s_out, zp_out), alpha)
        assert (float32_table != want).any()
        np.testing.assert_array_equal(lut_ops.leaky_relu_table(alpha, s_in, zp_in, s_out, zp_out), want)


def test_fixed_output_quantizations_are_enforced():
    assert lut_ops.OUTPUT_QUANT == {"logistic": (1 / 256, -128), "tanh": (1 / 128, 0)}
    for q in [(1 / 128, -128), (1 / 256, 0), (1 / 256, -127), (0.1, -128)]:
        with pytest.raises(ValueError, match="LOGISTIC output must be quantized with scale 1/256 and zero point -128"):
            lut_ops.logistic_table(0.1, 0, *q)
    for q in [(1 / 256, 0), (1 / 128, -128), (1 / 128, 1), (0.1, 0)]:
        with pytest.raises(ValueError, match="TANH output must be quantized with scale 1/128 and zero point 0"):
            lut_ops.tanh_table(0.1, 0, *q)
    lut_ops.logistic_table(0.1, 0, float(np.float32(1 / 256)), -128)  # the file's float32 1/256 is fine


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="input scale"):
        lut_ops.logistic_table(0.0, 0, 1 / 256, -128)
    with pytest.raises(ValueError, match="zero point"):
        lut_ops.tanh_table(0.1, 128, 1 / 128, 0)
    with pytest.raises(ValueError, match="output scale"):
        lut_ops.hard_swish_table(0.1, 0, -1.0, 0)
    with pytest.raises(ValueError, match="zero point"):
        lut_ops.leaky_relu_table(0.1, 0.1, 0, 0.1, -129)
    with pytest.raises(ValueError, match="alpha"):
        lut_ops.leaky_relu_table(float("nan"), 0.1, 0, 0.1, 0)


@pytest.mark.parametrize("in_scale,out_scale", [(1.0, 1 / 128), (1.0, 1 / 500), (0.5, 0.5 / 128)])
def test_hard_swish_scale_ratio_limit(in_scale, out_scale):
    """TFLite Micro refuses a hard-swish whose output multiplier exponent is positive (in/out >= 128)."""
    with pytest.raises(ValueError, match="output multiplier exponent"):
        lut_ops.hard_swish_table(in_scale, 0, out_scale, 0)
    _need_tflm()
    with pytest.raises(RuntimeError):
        tflm_table("HARD_SWISH", (in_scale, 0), (out_scale, 0))


@pytest.mark.parametrize("name", ["logistic", "tanh", "hard_swish", "leaky_relu"])
def test_tables_approximate_the_float_functions(name):
    """Independent of TFLite Micro: each table is within 1 LSB of the real function, rounded."""
    s_in, zp = 0.05, -3
    x = (np.arange(-128, 128) - zp) * float(np.float32(s_in))
    if name == "logistic":
        (s_out, zp_out), ref = (1 / 256, -128), 1 / (1 + np.exp(-x))
        table = lut_ops.logistic_table(s_in, zp, s_out, zp_out)
    elif name == "tanh":
        (s_out, zp_out), ref = (1 / 128, 0), np.tanh(x)
        table = lut_ops.tanh_table(s_in, zp, s_out, zp_out)
    elif name == "hard_swish":
        (s_out, zp_out), ref = (0.03, -90), x * np.clip(x + 3, 0, 6) / 6
        table = lut_ops.hard_swish_table(s_in, zp, s_out, zp_out)
    else:
        (s_out, zp_out), ref = (0.04, -20), np.where(x >= 0, x, 0.1 * x)
        table = lut_ops.leaky_relu_table(0.1, s_in, zp, s_out, zp_out)
    expected = np.clip(np.round(ref / s_out) + zp_out, -128, 127)
    assert np.abs(table.astype(np.int64) - expected).max() <= 1
