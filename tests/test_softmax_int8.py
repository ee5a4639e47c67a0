"""TFLite Micro's int8 SOFTMAX: the NumPy reference (nupes_edge/intref/softmax.py) against the real
TFLite Micro interpreter on one-op models, and the C kernel (runtime_c/nupes_softmax.c, under
ASan/UBSan) against the reference, bit for bit; plus the two MLPerf Tiny int8 models' own softmax."""
from __future__ import annotations

import os
import shutil
import struct
import subprocess

import numpy as np
import pytest

from nupes_edge import runtime_c
from nupes_edge.interpreters import run_tflm
from nupes_edge.intref.softmax import softmax_int8, softmax_params

MLPERF_DIR = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "shared", "models", "mlperf-tiny"))
MLPERF = {"ic": "pretrainedResnet_quant.tflite", "kws": "kws_ref_model.tflite"}

# (input scale, input zero point): powers of two, MLPerf-like scales, a tiny one (shift 7, every
# difference used) and a huge one (multiplier capped at 2^31 - 1, shift 31, diff_min 0).
SCALES = [(1 / 16, 0), (1 / 8, -20), (0.1, 5), (0.1718535, 24), (0.2173913, -128), (0.25, 127),
          (0.3, -3), (0.5, 10), (0.0390625, -60), (2.0, 0), (40.0, 0), (2.0 ** -20, 0)]
COLUMNS = [1, 2, 3, 4, 5, 7, 10, 12, 16, 25, 33, 40]


def softmax_model(n: int, scale: float, zero_point: int, beta: float = 1.0) -> bytes:
    """A .tflite file holding one int8 SOFTMAX: [1, n] -> [1, n], output scale 1/256, zero point -128."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as S

    def tensor(name, buffer, s, zp):
        t = S.TensorT()
        t.name, t.shape, t.type, t.buffer = name, [1, n], S.TensorType.INT8, buffer
        t.quantization = S.QuantizationParametersT()
        t.quantization.scale, t.quantization.zeroPoint = [s], [zp]
        return t

    code = S.OperatorCodeT()
    code.builtinCode = code.deprecatedBuiltinCode = S.BuiltinOperator.SOFTMAX
    code.version = 2
    op = S.OperatorT()
    op.opcodeIndex, op.inputs, op.outputs = 0, [0], [1]
    op.builtinOptionsType = S.BuiltinOptions.SoftmaxOptions
    op.builtinOptions = S.SoftmaxOptionsT()
    op.builtinOptions.beta = beta
    sg = S.SubGraphT()
    sg.tensors = [tensor("logits", 1, scale, zero_point), tensor("probs", 2, 1.0 / 256, -128)]
    sg.operators, sg.inputs, sg.outputs, sg.name = [op], [0], [1], "main"
    m = S.ModelT()
    m.version, m.description = 3, "nupes-edge softmax test"
    m.operatorCodes, m.subgraphs, m.buffers = [code], [sg], [S.BufferT() for _ in range(3)]
    b = flatbuffers.Builder(1024)
    b.Finish(m.Pack(b), file_identifier=b"TFL3")
    return bytes(b.Output())


def test_rows(rng: np.random.Generator, n: int, count: int = 24) -> np.ndarray:
    """Random rows plus the hard ones: ties, all equal, -128/127 extremes, close logits."""
    out = [rng.integers(-128, 128, (count // 4, n))]  # uniform: mostly one winner
    centre = rng.integers(-128, 128, (count // 2, 1))
    width = rng.choice([1, 3, 8, 24], (count // 2, 1))
    out.append(np.clip(centre + rng.integers(-1000, 1001, (count // 2, n)) % (2 * width + 1) - width, -128, 127))
    pair = rng.integers(-128, 128, (count // 4, 2))  # ties: two values only
    out.append(np.take_along_axis(pair, rng.integers(0, 2, (count // 4, n)), axis=1))
    out.append(np.array([[-128] * n, [127] * n, [0] * n, [int(rng.integers(-128, 128))] * n]))  # all equal
    out.append(np.where(rng.random((4, n)) < 0.5, -128, 127))  # extremes only
    out.append(np.array([[-128] * (n - 1) + [127], [127] + [-128] * (n - 1), [127] + [126] * (n - 1)]))
    return np.concatenate(out).astype(np.int8)


test_rows.__test__ = False  # a helper, not a test


def every_difference() -> np.ndarray:
    """Two columns: (hi, hi - k) for every k in 0..255 (each difference from the maximum once)."""
    k = np.arange(256)
    return np.stack([np.full(256, 127), 127 - k], 1).astype(np.int8)


def test_params_follow_tflite_micro_prepare():
    assert softmax_params(1 / 16) == (1 << 30, 23, -248)  # 2^22 = 0.5 * 2^23; 31 * 2^26 / 2^23
    assert softmax_params(0.5) == (1 << 30, 26, -31)
    assert softmax_params(1.0, beta=0.5) == softmax_params(0.5)
    assert softmax_params(40.0) == ((1 << 31) - 1, 31, 0)  # capped at 2^31 - 1: only the maximum survives
    # The scale is a float32 of the file, rounded before the double arithmetic: 0.1f, not 0.1.
    assert softmax_params(0.1) == (1717986944, 23, -248)
    assert softmax_params(float(np.float32(0.1))) == softmax_params(0.1)
    with pytest.raises(ValueError, match="below 2"):
        softmax_params(2.0 ** -27)  # TFLite Micro's TFLITE_CHECK_GT(multiplier, 1) would abort
    with pytest.raises(ValueError):
        softmax_params(0.0)


@pytest.mark.parametrize("scale,zp", SCALES, ids=[f"s{s:.6g}_zp{z}" for s, z in SCALES])
def test_reference_matches_tflite_micro(scale, zp):
    rng = np.random.default_rng(abs(hash((scale, zp))) % 2**32)
    params = softmax_params(scale)
    for n in COLUMNS:
        rows = test_rows(rng, n)
        if n == 2:
            rows = np.concatenate([rows, every_difference()])
        want = run_tflm(softmax_model(n, scale, zp), rows)
        got = softmax_int8(rows, *params)
        bad = np.flatnonzero((got != want).any(axis=1))
        assert bad.size == 0, f"n={n}, params={params}: row {rows[bad[0]]} -> {got[bad[0]]}, TFLM {want[bad[0]]}"


def _double_params(scale: float) -> tuple[int, int, int]:
    """What softmax_params would give if the scale were not rounded to float32 first (wrong)."""
    import math

    q, shift = math.frexp(scale * 2.0 ** 26)
    return math.floor(q * 2 ** 31 + 0.5), shift, -math.floor(31 * 2.0 ** 26 / 2.0 ** shift)


@pytest.mark.parametrize("scale,row", [
    (0.1, [70, 82, 76, 47, 58, 74, 52, 64, 85, 65]),
    (0.3, [58, 88, 90, 80, 75, 64, 64, 91, 70, 92]),
])
def test_float32_scale_matters(scale, row):
    """Rows where the multiplier from the double scale (0.1 rather than 0.1f) is off by one LSB."""
    x = np.array([row], np.int8)
    want = run_tflm(softmax_model(len(row), scale, 0), x)
    np.testing.assert_array_equal(softmax_int8(x, *softmax_params(scale)), want)
    assert (softmax_int8(x, *_double_params(scale)) != want).any()


def test_reference_shapes_and_input_checks():
    p = softmax_params(0.1)
    x = np.random.default_rng(3).integers(-128, 128, (2, 3, 10)).astype(np.int8)
    y = softmax_int8(x, *p)
    assert y.shape == x.shape and y.dtype == np.int8
    np.testing.assert_array_equal(y.reshape(6, 10), softmax_int8(x.reshape(6, 10), *p))
    with pytest.raises(TypeError):
        softmax_int8(x.astype(np.int16), *p)
    with pytest.raises(ValueError):
        softmax_int8(np.zeros((2, 0), np.int8), *p)


# ------------------------------------------------------------------------------------------ C kernel

HARNESS = r"""
#include <stdio.h>
#include <stdlib.h>
#include <stdint.h>
#include "nupes_kernels.h"
/* stdin: records of five little-endian int32 (rows, cols, mult, left_shift, diff_min) followed by
 * rows * cols int8; stdout: rows * cols int8 per record. */
static int32_t le32(const unsigned char *b)
{
    return (int32_t)((uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24);
}
int main(void)
{
    unsigned char h[20];
    while (fread(h, 1, sizeof h, stdin) == sizeof h) {
        const int32_t rows = le32(h), cols = le32(h + 4);
        const size_t n = (size_t)rows * (size_t)cols;
        int8_t *in = malloc(n + 1), *out = malloc(n + 1);
        if (!in || !out || fread(in, 1, n, stdin) != n) {
            return 2;
        }
        nupes_softmax_s8(in, out, rows, cols, le32(h + 8), le32(h + 12), le32(h + 16));
        fwrite(out, 1, n, stdout);
        free(in);
        free(out);
    }
    return 0;
}
"""

WARNINGS = ["-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic"]


@pytest.fixture(scope="module")
def harness(tmp_path_factory):
    if shutil.which("gcc") is None:
        pytest.skip("gcc not found")
    d = tmp_path_factory.mktemp("softmax_c")
    (d / "h.c").write_text(HARNESS)
    exe = d / "h"
    src = os.path.join(runtime_c.DIR, "nupes_softmax.c")
    subprocess.run(["gcc", *WARNINGS, "-O1", "-g", "-fsanitize=address,undefined", "-fno-sanitize-recover=all",
                    "-fno-omit-frame-pointer", "-I", runtime_c.DIR, str(d / "h.c"), src, "-o", str(exe)],
                   check=True, capture_output=True, timeout=120)
    return str(exe)


def run_c(exe: str, cases: list[tuple[np.ndarray, tuple[int, int, int]]]) -> list[np.ndarray]:
    data = b"".join(struct.pack("<5i", *x.shape, *p) + x.tobytes() for x, p in cases)
    r = subprocess.run([exe], input=data, capture_output=True, timeout=120, check=False)
    assert r.returncode == 0, r.stderr.decode(errors="replace")[-3000:]
    out, pos = [], 0
    for x, _ in cases:
        out.append(np.frombuffer(r.stdout[pos:pos + x.size], np.int8).reshape(x.shape))
        pos += x.size
    assert pos == len(r.stdout)
    return out


def test_c_kernel_matches_reference(harness):
    rng = np.random.default_rng(11)
    scales = [s for s, _ in SCALES] + [1e-7, 0.17185351, 0.14469251, 1.0, 8.0]
    cases = []
    for scale in scales:
        p = softmax_params(scale)
        for n in COLUMNS + [100, 600]:  # 600 equal columns: a sum >= 256, where TFLite Micro stops
            cases.append((test_rows(rng, n, 40), p))
        cases.append((every_difference(), p))
    # every pair of differences with three columns, and wide rows, for two typical scales
    k1, k2 = (a.ravel() for a in np.meshgrid(np.arange(256), np.arange(256)))
    three = np.stack([np.full(k1.size, 127), 127 - k1, 127 - k2], 1).astype(np.int8)
    for scale in (0.1, 0.5):
        cases.append((three, softmax_params(scale)))
    cases.append((np.full((2, 4100), 5, np.int8), softmax_params(0.1)))  # sum saturates (>= 4096 columns)
    cases.append((np.zeros((0, 10), np.int8), softmax_params(0.1)))  # no rows
    got = run_c(harness, cases)
    for (x, p), g in zip(cases, got):
        want = softmax_int8(x, *p) if x.size else x
        bad = np.flatnonzero((g != want).any(axis=1))
        assert bad.size == 0, f"params {p}, n={x.shape[1]}: row {x[bad[0]]} -> C {g[bad[0]]}, ref {want[bad[0]]}"


def test_c_kernel_compiles_for_cortex_m4(tmp_path):
    cc = shutil.which("arm-none-eabi-gcc")
    if cc is None:
        pytest.skip("arm-none-eabi-gcc not found")
    src = os.path.join(runtime_c.DIR, "nupes_softmax.c")
    r = subprocess.run([cc, *WARNINGS, "-mcpu=cortex-m4", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv4-sp-d16", "-Os",
                        "-I", runtime_c.DIR, "-c", src, "-o", str(tmp_path / "s.o")],
                       capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stderr


# ------------------------------------------------------------------------------- MLPerf Tiny models

def _mlperf_softmax(key: str):
    """(model bytes, softmax input tensor index, its scale, zero point, beta) of an MLPerf Tiny model."""
    from ai_edge_litert import schema_py_generated as S

    path = os.path.join(MLPERF_DIR, MLPERF[key])
    if not os.path.exists(path):
        pytest.skip(f"MLPerf Tiny model absent: {path} (CI provides ../shared/models/mlperf-tiny)")
    with open(path, "rb") as f:
        data = f.read()
    m = S.ModelT.InitFromPackedBuf(data, 0)
    sg = m.subgraphs[0]
    op = sg.operators[-1]
    code = m.operatorCodes[op.opcodeIndex]
    assert max(code.builtinCode, code.deprecatedBuiltinCode) == S.BuiltinOperator.SOFTMAX, f"{path} does not end in SOFTMAX"
    t = sg.tensors[op.inputs[0]]
    assert t.type == S.TensorType.INT8
    return data, op.inputs[0], float(t.quantization.scale[0]), int(t.quantization.zeroPoint[0]), float(op.builtinOptions.beta)


@pytest.mark.parametrize("key", sorted(MLPERF))
def test_mlperf_softmax_parameters(key, harness):
    from tflite_micro import runtime

    data, index, scale, zp, beta = _mlperf_softmax(key)
    params = softmax_params(scale, beta)
    n = {"ic": 10, "kws": 12}[key]
    rng = np.random.default_rng(5)
    rows = np.concatenate([test_rows(rng, n, 200), every_difference()[:, [1] * (n - 1) + [0]]])
    want = run_tflm(softmax_model(n, scale, zp, beta), rows)
    np.testing.assert_array_equal(softmax_int8(rows, *params), want)
    np.testing.assert_array_equal(run_c(harness, [(rows, params)])[0], want)
    # and inside the real model: its own logits through the reference give its own output
    it = runtime.Interpreter.from_bytes(data, intrepreter_config=runtime.InterpreterConfig.kPreserveAllTensors)
    shape = it.get_input_details(0)["shape"]
    for _ in range(4):
        it.set_input(rng.integers(-128, 128, shape).astype(np.int8), 0)
        it.invoke()
        logits = it.GetTensor(index, 0)["tensor_data"]
        np.testing.assert_array_equal(softmax_int8(logits, *params), it.get_output(0))
