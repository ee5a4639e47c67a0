"""SVDF (int8 input and output; int16 time weights and state, or int8 ones) against TFLite Micro on files
built here: 1 filter, ranks 1-3, memory sizes 1 to 12, 1 / odd / 33 inputs, unit counts not a multiple
of four, feature and output multipliers above and below 1 (left and right shifts), output zero points
0 / nonzero / -128 (RELU), int8 states whose zero point makes the stored value wrap, int16 states that
saturate, outputs driven into saturation, and inputs at the int8 extremes; and the SVDFs of the public
keyword model, each cut out into a file of its own. The integer reference must equal TFLite Micro on the
file, the host build (portable and DSP, sanitized) the reference, and the int8 export the file."""
import dataclasses
import os
import shutil

import numpy as np
import pytest
from ai_edge_litert import schema_py_generated as S

from nupes_edge import api, artifact, build, tflite_export, torch_exec
from nupes_edge.errors import NupesError
from nupes_edge.importers import import_tflite_bytes
from nupes_edge.interpreters import run_litert, run_tflm
from nupes_edge.intref import run_int
from nupes_edge.intref.fixedpoint import quantize_multiplier
from nupes_edge.intref.svdf import reset_state, svdf_step
from nupes_edge.quant.driver import quantize_graph
from nupes_edge.validate import check_model

KEYWORD = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "shared", "models", "zoo",
                                       "tflm_keyword_scrambled_8bit.tflite"))
HAVE_QEMU = shutil.which("qemu-system-arm") is not None and shutil.which("arm-none-eabi-gcc") is not None
A = S.ActivationFunctionType


def add_svdf(b, rng, x: int, n_in: int, units: int, rank: int, memory: int, *, in_scale: float, state_bits=16,
             state_q=(0.5, 0), w_scale=0.02, t_scale=1e-4, bias_range=3000, out_q=(0.3, 5), act=A.NONE,
             bias=True, name="svdf") -> int:
    """One SVDF reading tensor x ([1, n_in]) as TFLite's converter writes it; returns its output tensor."""
    filters = units * rank
    t_dt = np.int16 if state_bits == 16 else np.int8
    t_lim = (1 << (state_bits - 1)) - 1
    wf = b.tensor(f"{name}/wf", [filters, n_in], np.int8, rng.integers(-127, 128, (filters, n_in)).astype(np.int8),
                  scale=w_scale, zp=0)
    wt = b.tensor(f"{name}/wt", [filters, memory], t_dt, rng.integers(-t_lim, t_lim + 1, (filters, memory)).astype(t_dt),
                  scale=t_scale, zp=0)
    bt = -1
    if bias:
        bt = b.tensor(f"{name}/b", [units], np.int32, rng.integers(-bias_range, bias_range + 1, units).astype(np.int32),
                      scale=float(np.float32(state_q[0]) * np.float32(t_scale)), zp=0)
    st = b.tensor(f"{name}/state", [1, filters * memory], t_dt, scale=state_q[0], zp=state_q[1])
    b.tensors[st].isVariable = True
    y = b.tensor(f"{name}/y", [1, units], np.int8, scale=out_q[0], zp=out_q[1])
    o = S.SVDFOptionsT()
    o.rank, o.fusedActivationFunction = rank, act
    b.op(S.BuiltinOperator.SVDF, 3, [x, wf, wt, bt, st], [y], S.BuiltinOptions.SVDFOptions, o)
    return y


def svdf_file(rng, n_in: int, units: int, rank: int, memory: int, in_q=(0.05, -3), **opts) -> bytes:
    b = tflite_export._Builder()
    x = b.tensor("x", [1, n_in], np.int8, scale=in_q[0], zp=in_q[1])
    y = add_svdf(b, rng, x, n_in, units, rank, memory, in_scale=in_q[0], **opts)
    return b.finish([x], [y], "svdf test")


def chain_file(rng) -> bytes:
    """SVDF -> FULLY_CONNECTED -> SVDF (int8 states, RELU), as in a keyword-spotting model."""
    b = tflite_export._Builder()
    x = b.tensor("x", [1, 24], np.int8, scale=0.06, zp=-128)
    h = add_svdf(b, rng, x, 24, 16, 2, 8, in_scale=0.06, state_bits=8, state_q=(0.8, -50), t_scale=0.015,
                 out_q=(0.25, -128), act=A.RELU, name="s1", bias_range=300)
    w = b.tensor("fc/w", [12, 16], np.int8, rng.integers(-127, 128, (12, 16)).astype(np.int8), scale=0.006, zp=0)
    fb = b.tensor("fc/b", [12], np.int32, rng.integers(-2000, 2001, 12).astype(np.int32),
                  scale=float(np.float32(0.25) * np.float32(0.006)), zp=0)
    f = b.tensor("fc/y", [1, 12], np.int8, scale=0.4, zp=-7)
    o = S.FullyConnectedOptionsT()
    b.op(S.BuiltinOperator.FULLY_CONNECTED, 4, [h, w, fb], [f], S.BuiltinOptions.FullyConnectedOptions, o)
    y = add_svdf(b, rng, f, 12, 6, 1, 5, in_scale=0.4, state_bits=8, state_q=(0.43, 25), t_scale=0.007,
                 out_q=(0.13, -128), act=A.RELU, name="s2", bias_range=300)
    return b.finish([x], [y], "svdf chain")


CASES = {  # name: (inputs, units, rank, memory, options)
    "one_filter_memory_1": (1, 1, 1, 1, {}),
    "rank_2_memory_10_odd_inputs": (7, 5, 2, 10, {"out_q": (0.2, 0)}),
    "rank_1_33_inputs_left_shift": (33, 6, 1, 12, {"state_q": (2e-4, 0), "t_scale": 1e-4, "out_q": (0.2, -20),
                                                  "bias_range": 100000}),
    "int8_state_output_left_shift": (8, 5, 1, 3, {"state_bits": 8, "state_q": (0.5, -10), "t_scale": 0.05,
                                                  "out_q": (0.01, 4), "w_scale": 0.002, "bias_range": 20}),
    "rank_3_right_shifts": (9, 3, 3, 4, {"state_q": (2.0, 0), "t_scale": 3e-5, "out_q": (0.9, 11)}),
    "int8_state_wraps_relu": (16, 7, 1, 6, {"state_bits": 8, "state_q": (0.05, -50), "t_scale": 0.015,
                                            "out_q": (0.1, -128), "act": A.RELU, "bias_range": 500}),
    "int8_state_rank_2_high_zero_point": (5, 3, 2, 11, {"state_bits": 8, "state_q": (0.04, 90), "t_scale": 0.02,
                                                        "out_q": (0.1, 3), "bias_range": 500}),
    "int16_state_saturates_relu": (12, 9, 1, 3, {"state_q": (5e-4, 0), "t_scale": 1e-3, "out_q": (3.0, -128),
                                                 "act": A.RELU}),
    "saturating_outputs": (20, 4, 2, 2, {"w_scale": 0.3, "t_scale": 2e-3, "out_q": (1.0, 0),
                                         "bias_range": 1 << 20}),
}


# what a case is there to reach: (int parameters, the newest state values of its inputs) -> True
REACHES = {
    "rank_1_33_inputs_left_shift": lambda p, newest: p.shift1 > 0,
    # and a multiplier that differs between double arithmetic (the runtime's) and float32 (intref/svdf.py)
    "int8_state_output_left_shift": lambda p, newest: p.shift2 > 0 and p.mult2 != quantize_multiplier(
        float(np.float32(p.state_scale) * np.float32(p.time_scale) / np.float32(0.01)))[0],
    "rank_3_right_shifts": lambda p, newest: p.shift1 < 0 and p.shift2 < 0,
    "int16_state_saturates_relu": lambda p, newest: (np.abs(newest) >= 32767).any() and (np.abs(newest) < 32767).any(),
    "int8_state_wraps_relu": lambda p, newest: (newest > 0).any(),  # -50 + (a value below -78) wrapped past -128
}


def _inputs(rng, n_in, n=24):
    x = rng.integers(-128, 128, (n, n_in)).astype(np.int8)
    x[0], x[1] = -128, 127  # the extremes
    return x


def _check(data: bytes, name: str, n_in: int, tmp_path, rng) -> np.ndarray:
    """Reference == TFLite Micro on the file; host builds == reference; the export == the file. Returns
    TFLite Micro's outputs."""
    qm = quantize_graph(import_tflite_bytes(data, f"{name}.tflite"), None, "uniform", 8, name=name)
    x = _inputs(rng, n_in)
    if name in REACHES:
        p = qm.params[qm.graph.nodes[0].name]
        _, state = svdf_step(x, reset_state(p, len(x)), p)
        assert REACHES[name](p, state.reshape(len(x), p.w_time.shape[0], -1)[:, :, -1]), f"{name} misses its aim"
    want = run_tflm(data, x).reshape(len(x), -1)
    ref = run_int(qm, x).reshape(len(x), -1)
    np.testing.assert_array_equal(ref, want)
    for dsp in (False, True):
        hb = build.build_host(qm, str(tmp_path / f"dsp{int(dsp)}"), sanitize=True, dsp=dsp)
        np.testing.assert_array_equal(build.run_host(hb.runner, x).reshape(len(x), -1), ref)
    again = run_tflm(tflite_export.export(qm, "int8"), x).reshape(len(x), -1)
    np.testing.assert_array_equal(again, want)  # the exported file is the same model
    return want


@pytest.mark.parametrize("case", sorted(CASES))
def test_svdf_equals_tflite_micro_and_the_host_build(case, tmp_path):
    n_in, units, rank, memory, opts = CASES[case]
    rng = np.random.default_rng(len(case))
    want = _check(svdf_file(rng, n_in, units, rank, memory, **opts), case, n_in, tmp_path, rng)
    assert len(np.unique(want)) > 2, "the case must exercise more than saturated outputs"
    if case == "saturating_outputs":
        assert (want == 127).any() and (want == -128).any()


def test_svdf_chain_with_a_dense_layer(tmp_path):
    rng = np.random.default_rng(3)
    want = _check(chain_file(rng), "chain", 24, tmp_path, rng)
    assert len(np.unique(want)) > 2


def test_each_inference_starts_from_the_reset_state():
    """TFLite Micro keeps an SVDF's state between Invoke()s until reset; a nupes-edge inference starts from
    the reset state, so the same input gives the same output whatever ran before. Carried on (a second
    invocation on the first's state), the outputs differ: the state matters when it is kept."""
    rng = np.random.default_rng(5)
    data = svdf_file(rng, 6, 4, 2, 5)
    qm = quantize_graph(import_tflite_bytes(data, "t.tflite"), None, "uniform", 8)
    p = qm.params[qm.graph.nodes[0].name]
    x = _inputs(rng, 6, n=6)
    first = run_int(qm, x[[2]])
    np.testing.assert_array_equal(run_int(qm, x)[2], first[0])
    np.testing.assert_array_equal(run_tflm(data, x)[2], first[0])
    _, state = svdf_step(x, reset_state(p, len(x)), p)
    carried, _ = svdf_step(x, state, p)
    assert (carried != run_int(qm, x)).any()


def test_float_model_and_float_export_agree_with_litert():
    """The float SVDF (torch_exec) from a zero state against LiteRT on the float export."""
    rng = np.random.default_rng(9)
    data = svdf_file(rng, 10, 5, 2, 7, act=A.RELU, out_q=(0.3, -128))
    qm = quantize_graph(import_tflite_bytes(data, "f.tflite"), None, "uniform", 8)
    x = rng.normal(0, 2, (8, 10)).astype(np.float32)
    mine = torch_exec.run_numpy(qm.graph, x)
    theirs = run_litert(tflite_export.export(qm, "float"), x)
    np.testing.assert_allclose(mine.reshape(len(x), -1), theirs.reshape(len(x), -1), rtol=1e-4, atol=1e-4)
    assert (theirs == 0).any() and (theirs > 0).any()  # the ReLU bites


TAMPERED = {  # an .nq file is untrusted: each change must be refused before the C is generated
    "time weight past int8": (lambda p: dataclasses.replace(p, w_time=p.w_time + 200), "time weights"),
    "int16 state with a zero point": (lambda p: dataclasses.replace(p, state_zp=3), "state zero point"),
    "bias that overflows": (lambda p: dataclasses.replace(p, bias=np.full_like(p.bias, (1 << 31) - 5)), "overflow"),
    "rank off the weights": (lambda p: dataclasses.replace(p, rank=p.rank + 1), "do not fit"),
    "left shift that overflows": (lambda p: dataclasses.replace(p, shift1=30), "feature sum can overflow"),
    "negative multiplier": (lambda p: dataclasses.replace(p, mult2=-1), "multiplier 2"),
    "float scale": (lambda p: dataclasses.replace(p, state_scale=float("nan")), "scales"),
}


@pytest.mark.parametrize("what", sorted(TAMPERED))
def test_tampered_parameters_are_refused(what, tmp_path):
    rng = np.random.default_rng(4)
    qm = quantize_graph(import_tflite_bytes(svdf_file(rng, 5, 3, 2, 4), "t.tflite"), None, "uniform", 8, name="t")
    check_model(qm)  # the model as made is accepted
    change, needle = TAMPERED[what]
    name = qm.graph.nodes[0].name
    p = qm.params[name]
    if what == "time weight past int8":  # an int8 state: its time weights are int8 values
        qm = quantize_graph(import_tflite_bytes(svdf_file(rng, 5, 3, 2, 4, state_bits=8, state_q=(0.05, 3)),
                                                "t.tflite"), None, "uniform", 8, name="t")
        p = qm.params[name]
    qm.params[name] = change(p)
    with pytest.raises(NupesError, match=needle):
        check_model(qm)
    with pytest.raises(NupesError):
        build.build_host(qm, str(tmp_path))


def _with(data: bytes, change) -> bytes:
    import flatbuffers

    m = S.ModelT.InitFromObj(S.Model.GetRootAsModel(bytes(data), 0))
    change(m.subgraphs[0], m)
    fb = flatbuffers.Builder(1024)
    fb.Finish(m.Pack(fb), file_identifier=b"TFL3")
    return bytes(fb.Output())


def _set_act(act):
    def change(sg, m):
        sg.operators[0].builtinOptions.fusedActivationFunction = act
    return change


def _set_zp(tensor: int, zp: int):
    def change(sg, m):
        sg.tensors[tensor].quantization.zeroPoint = [zp]
    return change


REFUSALS = {  # name: (file, what the refusal says)
    "no bias": (lambda rng: svdf_file(rng, 4, 2, 1, 3, bias=False), "no bias: TFLite Micro's int8 SVDF reads"),
    "relu6": (lambda rng: _with(svdf_file(rng, 4, 2, 1, 3), _set_act(A.RELU6)), "fused activation 3"),
    "tanh": (lambda rng: _with(svdf_file(rng, 4, 2, 1, 3), _set_act(A.TANH)), "fused activation 4"),
    "relu off -128": (lambda rng: svdf_file(rng, 4, 2, 1, 3, act=A.RELU, out_q=(0.3, 0)),
                      "RELU on an output of zero point 0"),
    "int16 state zero point": (lambda rng: _with(svdf_file(rng, 4, 2, 1, 3), _set_zp(4, 7)),
                               "int16 activation state of zero point 7"),
    "mixed state types": (lambda rng: _with(svdf_file(rng, 4, 2, 1, 3, state_bits=8),
                                            lambda sg, m: setattr(sg.tensors[2], "type", S.TensorType.INT16)),
                          "both be int16 or both int8"),
    "batch 2": (lambda rng: _with(svdf_file(rng, 4, 2, 1, 3), lambda sg, m: setattr(sg.tensors[0], "shape", [2, 4])),
                "batch 1"),
}


@pytest.mark.parametrize("what", sorted(REFUSALS))
def test_variants_are_refused_by_name(what):
    make, needle = REFUSALS[what]
    with pytest.raises(NupesError) as e:
        import_tflite_bytes(make(np.random.default_rng(0)), "v.tflite")
    assert "operator 0 (SVDF)" in str(e.value) and needle in str(e.value), str(e.value)


def test_cli_refuses_with_exit_code_2(tmp_path):
    from tests.test_cli import cli

    (tmp_path / "m.tflite").write_bytes(svdf_file(np.random.default_rng(1), 4, 2, 1, 3, bias=False))
    r = cli("quantize", "m.tflite", "-o", "m.nq", cwd=tmp_path)
    assert r.returncode == 2 and "SVDF" in r.stderr and "no bias" in r.stderr, r.stdout + r.stderr


def test_cli_quantizes_an_svdf_only_file_saying_what_is_kept(tmp_path):
    from tests.test_cli import cli

    (tmp_path / "m.tflite").write_bytes(svdf_file(np.random.default_rng(1), 6, 3, 2, 4))
    r = cli("quantize", "m.tflite", "--method", "uniform", "--wbits", "8", "-o", "m.nq", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "activation state's quantization of 1 SVDF, kept as stored" in r.stdout, r.stdout
    r = cli("quantize", "m.tflite", "--method", "powerquant", "--wbits", "4", "--layer-wbits", "svdf_0=8", "-o", "m8.nq",
            cwd=tmp_path)  # pinned to 8 bits: the file's own (int16 time) weights
    assert r.returncode == 0 and "of 1 SVDF, kept as stored" in r.stdout, r.stdout + r.stderr
    r = cli("quantize", "m.tflite", "--method", "powerquant", "--wbits", "4", "-o", "m4.nq", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "weights re-quantized with powerquant to 4-bit levels" in r.stdout, r.stdout


@pytest.mark.parametrize("method,bits,case", [("uniform", 4, "chain"), ("powerquant", 3, "rank_2_memory_10_odd_inputs"),
                                              ("nupes", 4, "int8_state_rank_2_high_zero_point")])
def test_requantized_svdf_weights_take_the_methods_levels_and_tflite_micro_agrees(method, bits, case, tmp_path):
    """Re-quantized SVDFs: each one's feature and time weights hold at most 2^b - 1 values, the state's
    quantization stays the file's, and the exported int8 file (the re-quantized model) gives under TFLite
    Micro exactly what the reference and the host build give. (The chain's dense layer is exact in int8
    at uniform widths only: a non-uniform dense layer exports as its nearest int8 weights.)"""
    rng = np.random.default_rng(21)
    if case == "chain":
        data, n_in = chain_file(rng), 24
    else:
        n_in, units, rank, memory, opts = CASES[case]
        data = svdf_file(rng, n_in, units, rank, memory, **opts)
    g = import_tflite_bytes(data, "m.tflite")
    x = _inputs(rng, n_in, n=40)
    s_in, zp_in = g.file_quant.act[g.input_name]
    qm = quantize_graph(g, (x[:32].astype(np.float32) - zp_in) * s_in, method, bits, name="chain")
    for node in (n for n in g.nodes if n.op == "svdf"):
        p, rec = qm.params[node.name], g.file_quant.svdfs[node.name]
        assert len(np.unique(p.w_feature)) <= 2 ** bits - 1 and len(np.unique(p.w_time)) <= 2 ** bits - 1
        assert (p.state_scale, p.state_zp) == (float(np.float32(rec["state"][0])), rec["state"][1])
    ref = run_int(qm, x).reshape(len(x), -1)
    np.testing.assert_array_equal(run_tflm(tflite_export.export(qm, "int8"), x).reshape(len(x), -1), ref)
    hb = build.build_host(qm, str(tmp_path), sanitize=True)
    np.testing.assert_array_equal(build.run_host(hb.runner, x).reshape(len(x), -1), ref)
    assert len(np.unique(ref)) > 2


def _keyword_svdf(k: int, zero_bias: bool = False) -> tuple[bytes, int]:
    """Operator k of the public keyword model (an int8 SVDF with an int8 state of nonzero zero point, RELU
    on an output of zero point -128) as a file of its own: its tensors read from the file here, never
    stored in the source. The model's weights are scrambled: its int32 biases are random values near
    +-2^31 that saturate every output, so ``zero_bias`` sets them to 0 to let the sums show."""
    if not os.path.isfile(KEYWORD):
        pytest.skip(f"public model absent: {KEYWORD}")
    m = S.ModelT.InitFromPackedBuf(bytearray(open(KEYWORD, "rb").read()), 0)
    sg = m.subgraphs[0]
    op = sg.operators[k]
    b = tflite_export._Builder()
    dtypes = {S.TensorType.INT8: np.int8, S.TensorType.INT16: np.int16, S.TensorType.INT32: np.int32}
    ids = []
    for i in [*op.inputs, op.outputs[0]]:
        t = sg.tensors[i]
        data = m.buffers[t.buffer].data
        values = None if data is None or len(data) == 0 else \
            np.frombuffer(np.asarray(data, np.uint8).tobytes(), dtypes[t.type]).reshape([int(v) for v in t.shape])
        if zero_bias and i == op.inputs[3]:
            values = np.zeros_like(values)
        ids.append(b.tensor(f"t{i}", [int(v) for v in t.shape], dtypes[t.type], values,
                            scale=float(t.quantization.scale[0]), zp=int(t.quantization.zeroPoint[0])))
        b.tensors[-1].isVariable = bool(t.isVariable)
    b.op(S.BuiltinOperator.SVDF, 3, ids[:5], [ids[5]], S.BuiltinOptions.SVDFOptions, op.builtinOptions)
    return b.finish([ids[0]], [ids[5]], "keyword svdf"), int(sg.tensors[op.inputs[0]].shape[1])


@pytest.mark.parametrize("k, zero_bias", [(1, False), (1, True), (3, True), (9, True)])
def test_the_keyword_models_svdfs_equal_tflite_micro(k, zero_bias, tmp_path):
    data, n_in = _keyword_svdf(k, zero_bias)
    want = _check(data, f"kw{k}", n_in, tmp_path, np.random.default_rng(k))
    if zero_bias:
        assert len(np.unique(want)) > 2


@pytest.mark.skipif(not HAVE_QEMU, reason="needs qemu-system-arm and arm-none-eabi-gcc (make setup installs them)")
def test_svdf_chain_on_the_emulated_stm32(tmp_path):
    qm = quantize_graph(import_tflite_bytes(chain_file(np.random.default_rng(3)), "chain.tflite"), None, "uniform", 8,
                        name="chain")
    model = tmp_path / "m.nq"
    artifact.save(qm, str(model))
    _, rep = api.run_emulated(str(model), "stm32", str(tmp_path / "out"), "random", 10, progress=False)
    assert rep.n == 10 and rep.mismatches == 0
    assert rep.original["what"] == "kept" and rep.original["mismatches"] == 0


def test_the_bias_is_read_on_the_state_times_time_grid_whatever_its_scale_says():
    """TFLite Micro adds an SVDF's int32 bias on the state x time grid and only checks the bias's own scale
    within 1e-5 (absolute), so a file may carry another scale: the float model must read the bias as TFLite
    Micro does (it read it on the file's scale, 2.5 x off here, before)."""
    import torch

    from nupes_edge.torch_exec import run as run_float

    rng = np.random.default_rng(1)
    b = tflite_export._Builder()
    x = b.tensor("x", [1, 8], np.int8, scale=0.05, zp=-3)
    wf = b.tensor("wf", [4, 8], np.int8, rng.integers(-127, 128, (4, 8)).astype(np.int8), scale=0.02, zp=0)
    wt = b.tensor("wt", [4, 3], np.int16, rng.integers(-32767, 32768, (4, 3)).astype(np.int16), scale=1e-5, zp=0)
    grid = float(np.float32(0.5) * np.float32(1e-5))
    bt = b.tensor("b", [4], np.int32, np.array([300000, -200000, 100000, 50000], np.int32), scale=2.5 * grid, zp=0)
    st = b.tensor("state", [1, 12], np.int16, scale=0.5, zp=0)
    b.tensors[st].isVariable = True
    y = b.tensor("y", [1, 4], np.int8, scale=0.05, zp=0)
    o = S.SVDFOptionsT()
    o.rank, o.fusedActivationFunction = 1, A.NONE
    b.op(S.BuiltinOperator.SVDF, 3, [x, wf, wt, bt, st], [y], S.BuiltinOptions.SVDFOptions, o)
    data = b.finish([x], [y], "bias scale")
    g = import_tflite_bytes(data, "s.tflite")
    xs = np.random.default_rng(2).integers(-128, 128, (16, 8)).astype(np.int8)
    want = run_tflm(data, xs).astype(np.float64) * 0.05
    got = np.clip(run_float(g, torch.from_numpy((xs.astype(np.float32) + 3) * 0.05)).detach().numpy(), -6.4, 6.35)
    assert np.abs(got - want).max() < 0.2, np.abs(got - want).max()  # a few output steps of 0.05, not the bias's 2.5x
