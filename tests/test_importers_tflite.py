"""The .tflite reader: round trips through our exporter, the CLI path to C, unsupported ops, fuzzing."""
import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nupes_edge import examples, tflite_export, torch_exec
from nupes_edge.errors import NupesError
from nupes_edge.importers import import_module, import_tflite, import_tflite_bytes
from nupes_edge.interpreters import litert_interpreter
from nupes_edge.quant.driver import quantize_graph
from tests.test_cli import cli

_models = {}


def exported(name, fmt):
    key = (name, fmt)
    if key not in _models:
        g = import_module(examples.model(name, progress=False), examples.models.example_input(name), name)
        qm = quantize_graph(g, examples.load(name, "calib")[0], "uniform", 8, name=name)
        _models[key] = (qm, tflite_export.export(qm, fmt))
    return _models[key]


@pytest.mark.parametrize("name", examples.NAMES)
@pytest.mark.parametrize("fmt,atol", [("float", 1e-4), ("int8", 5e-3)])
def test_round_trip_computes_the_same_network(name, fmt, atol):
    qm, data = exported(name, fmt)
    g = import_tflite_bytes(data, f"{name}.tflite")
    # a Flatten (PyTorch's C, H, W order) comes back as a RESHAPE in the file's H, W, C order, which the
    # next dense layer's columns follow
    assert [n.op for n in g.nodes] == [{"flatten": "reshape"}.get(n.op, n.op) for n in qm.graph.nodes]
    x = examples.load(name, "test")[0][:50]
    got = torch_exec.run_numpy(g, x)
    want = torch_exec.run_numpy(qm.graph, x, weights=qm.fq_weights())
    np.testing.assert_allclose(got, want, atol=atol * np.abs(want).max())


def test_tflite_to_nq_to_c_is_bit_exact(tmp_path):
    _, data = exported("digits", "int8")
    (tmp_path / "digits.tflite").write_bytes(data)
    r = cli("quantize", "digits.tflite", "--data", "digits", "--method", "nupes", "--wbits", "4", "-o", "m.nq", "--quiet",
            cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    r = cli("verify", "m.nq", "--board", "host", "--data", "digits", "-n", "200", "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    v = json.loads(r.stdout)
    assert v["mismatches"] == 0 and v["n"] == 200 and v["device_top1"] > 0.9


def _tiny_model(op_name):
    from ai_edge_litert import schema_py_generated as S

    b = tflite_export._Builder()
    x = b.tensor("x", [1, 4], np.float32)
    y = b.tensor("y", [1, 4], np.float32)
    b.op(getattr(S.BuiltinOperator, op_name), 1, [x], [y])
    return b.finish([x], [y], "tiny")


def test_unsupported_operator_is_named(tmp_path):
    p = tmp_path / "elu.tflite"
    p.write_bytes(_tiny_model("ELU"))
    with pytest.raises(NupesError, match=r"elu.tflite: not supported: ELU \(operator 0\)"):
        import_tflite(str(p))
    r = cli("quantize", str(p), "--data", "digits", "-o", str(tmp_path / "x.nq"))
    assert r.returncode == 2 and "ELU" in r.stderr and not (tmp_path / "x.nq").exists()


def test_not_a_tflite_file(tmp_path):
    with pytest.raises(NupesError, match="not a TFLite flatbuffer"):
        import_tflite_bytes(b"PK\x03\x04 not a model", "x.tflite")
    with pytest.raises(NupesError, match="no such file"):
        import_tflite(str(tmp_path / "nope.tflite"))


def _only_clean_errors(data: bytes) -> None:
    try:
        import_tflite_bytes(data, "fuzz.tflite")
    except NupesError:
        pass


fuzz = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@fuzz
@given(cut=st.integers(0, 20_000))
def test_fuzz_truncated(cut):
    _, data = exported("digits", "int8")
    _only_clean_errors(data[:cut % len(data)])


@fuzz
@given(flips=st.lists(st.tuples(st.integers(0, 1 << 20), st.integers(0, 7)), min_size=1, max_size=8))
def test_fuzz_bit_flips(flips):
    _, data = exported("digits", "int8")
    buf = bytearray(data)
    for pos, bit in flips:
        buf[pos % len(buf)] ^= 1 << bit
    _only_clean_errors(bytes(buf))


@fuzz
@given(pos=st.integers(0, 1 << 20), value=st.sampled_from([0x7FFFFFFF, 0xFFFFFFFF, 0x80000000, 0x10000, 3]))
def test_fuzz_oversized_vectors_and_bad_offsets(pos, value):
    _, data = exported("digits", "float")
    buf = bytearray(data)
    p = (pos % (len(buf) - 4)) & ~3  # overwrite one aligned 32-bit word: an offset or a vector length
    buf[p:p + 4] = value.to_bytes(4, "little")
    _only_clean_errors(bytes(buf))


def test_hand_built_model_with_same_padding_mean_and_softmax_matches_litert():
    """A .tflite built here without TensorFlow, using ops our exporter never writes."""
    from ai_edge_litert import schema_py_generated as S

    rng = np.random.default_rng(0)
    b = tflite_export._Builder()
    x = b.tensor("x", [1, 5, 5, 3], np.float32)
    w = b.tensor("w", [4, 3, 3, 3], np.float32, rng.normal(0, 0.5, (4, 3, 3, 3)).astype(np.float32))
    bias = b.tensor("b", [4], np.float32, rng.normal(0, 0.1, 4).astype(np.float32))
    c = b.tensor("c", [1, 5, 5, 4], np.float32)
    opts = S.Conv2DOptionsT()
    opts.padding, opts.strideH, opts.strideW = S.Padding.SAME, 1, 1
    opts.dilationHFactor = opts.dilationWFactor = 1
    opts.fusedActivationFunction = S.ActivationFunctionType.RELU6
    b.op(S.BuiltinOperator.CONV_2D, 1, [x, w, bias], [c], S.BuiltinOptions.Conv2DOptions, opts)
    axes = b.tensor("axes", [2], np.int32, np.array([1, 2], np.int32))
    m = b.tensor("m", [1, 4], np.float32)
    b.op(S.BuiltinOperator.MEAN, 1, [c, axes], [m], S.BuiltinOptions.ReducerOptions, S.ReducerOptionsT())
    fw = b.tensor("fw", [2, 4], np.float32, rng.normal(0, 1, (2, 4)).astype(np.float32))
    fb = b.tensor("fb", [2], np.float32, np.zeros(2, np.float32))
    logits = b.tensor("logits", [1, 2], np.float32)
    b.op(S.BuiltinOperator.FULLY_CONNECTED, 1, [m, fw, fb], [logits], S.BuiltinOptions.FullyConnectedOptions,
         S.FullyConnectedOptionsT())
    prob = b.tensor("prob", [1, 2], np.float32)
    so = S.SoftmaxOptionsT()
    so.beta = 1.0
    b.op(S.BuiltinOperator.SOFTMAX, 1, [logits], [prob], S.BuiltinOptions.SoftmaxOptions, so)
    data = b.finish([x], [prob], "hand-built")

    g = import_tflite_bytes(data, "hand.tflite")
    assert [n.op for n in g.nodes] == ["conv2d", "mean", "reshape", "linear"] and g.output_softmax
    assert g.nodes[0].act == "relu6" and g.nodes[0].attrs["pads"] == [1, 1, 1, 1]
    it = litert_interpreter(data)
    xs = rng.normal(0, 2, (6, 5, 5, 3)).astype(np.float32)
    want = []
    for r in xs:
        it.set_tensor(it.get_input_details()[0]["index"], r[None])
        it.invoke()
        want.append(it.get_tensor(it.get_output_details()[0]["index"]).ravel())
    import torch

    with torch.no_grad():
        got = torch_exec.run(g, torch.from_numpy(xs.transpose(0, 3, 1, 2).copy()), softmax=True).numpy()
    np.testing.assert_allclose(got, np.array(want), atol=1e-5)


def test_a_tflite_model_takes_its_data_as_n_h_w_c(tmp_path):
    """A .tflite model's calibration and test data are N x H x W x C, as TFLite takes them; data in
    PyTorch's N x C x H x W is refused with the expected layout named (exit 2). Both give the same
    model as the bundled set."""
    _, data = exported("digits", "int8")
    (tmp_path / "digits.tflite").write_bytes(data)
    x, y = examples.load("digits", "calib")
    np.savez(tmp_path / "nhwc.npz", x=x.transpose(0, 2, 3, 1), y=y)
    np.savez(tmp_path / "nchw.npz", x=x, y=y)
    r = cli("quantize", "digits.tflite", "--data", "nchw.npz", "--method", "powerquant", "-o", "a.nq", cwd=tmp_path)
    assert r.returncode == 2 and "N x H x W x C = N×[8, 8, 1]" in r.stderr and "Traceback" not in r.stderr
    r = cli("quantize", "digits.tflite", "--data", "nhwc.npz", "--method", "powerquant", "-o", "b.nq", "--json",
            cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    r2 = cli("quantize", "digits.tflite", "--data", "digits", "--method", "powerquant", "-o", "c.nq", "--json",
             cwd=tmp_path)
    layers = lambda out: [(d["bits"], d["a"], d["G"]) for d in json.loads(out)["layers"]]  # noqa: E731
    assert layers(r.stdout) == layers(r2.stdout)
    e = json.loads(cli("eval", "b.nq", "--data", "nhwc.npz", "--json", cwd=tmp_path).stdout)
    assert e["n"] == len(x) and e["int_top1"] > 0.9


def _shared_table_bomb(n_tensors: int, n_subgraphs: int) -> bytes:
    """A small valid flatbuffer whose subgraph entries all name one subgraph of ``n_tensors`` tensor
    entries that all name one tensor: n_tensors x n_subgraphs objects once unpacked."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as S

    b = flatbuffers.Builder(1024)
    name = b.CreateString("t")
    S.TensorStart(b)
    S.TensorAddName(b, name)
    tensor = S.TensorEnd(b)

    def repeated(start_vector, table: int, n: int) -> int:  # a vector naming one table n times
        start_vector(b, n)
        for _ in range(n):
            b.PrependUOffsetTRelative(table)
        return b.EndVector()

    tensors = repeated(S.SubGraphStartTensorsVector, tensor, n_tensors)
    S.SubGraphStart(b)
    S.SubGraphAddTensors(b, tensors)
    subgraphs = repeated(S.ModelStartSubgraphsVector, S.SubGraphEnd(b), n_subgraphs)
    S.ModelStart(b)
    S.ModelAddVersion(b, 3)
    S.ModelAddSubgraphs(b, subgraphs)
    b.Finish(S.ModelEnd(b), file_identifier=b"TFL3")
    return bytes(b.Output())


def test_shared_tables_are_refused_before_unpacking():
    import time
    import tracemalloc

    bomb = _shared_table_bomb(20_000, 20_000)  # 160 KB on disk, 4 x 10^8 tensor objects unpacked
    assert len(bomb) < 200_000
    tracemalloc.start()
    t0 = time.perf_counter()
    with pytest.raises(NupesError, match="refused before unpacking: its tables unpack to more than 200,000"):
        import_tflite_bytes(bomb, "bomb.tflite")
    elapsed = time.perf_counter() - t0
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert elapsed < 5 and peak < 64 << 20, (elapsed, peak)
    # The same shape without the multiplication is a model (of the wrong kind) again: not refused
    # for its size, but for what it holds.
    with pytest.raises(NupesError) as e:
        import_tflite_bytes(_shared_table_bomb(3, 1), "small.tflite")
    assert "refused before unpacking" not in str(e.value)
