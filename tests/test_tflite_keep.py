"""An int8 .tflite kept exactly: its activation quantization, int8 weights, scales and biases carried
over, so the integer reference, the host build and the emulated STM32 compute what TFLite Micro
computes on the same file, bit for bit, the final SOFTMAX included (it runs on the device with
TFLite Micro's arithmetic). Also: the logits when the softmax is left to the caller, re-quantizing
the weights without data keeps the activation quantization, and exporting a kept model gives back
the original's outputs."""
import os
import shutil

import numpy as np
import pytest

from nupes_edge import api, artifact, build, tflite_export
from nupes_edge.errors import NupesError
from nupes_edge.importers import import_tflite, import_tflite_bytes
from nupes_edge.interpreters import run_tflm
from nupes_edge.intref import run_int
from nupes_edge.layout import from_device, to_device
from nupes_edge.quant.driver import quantize_graph
from tests.test_cli import cli


def without_final_softmax(data: bytes) -> bytes:
    """The .tflite ``data`` with its final SOFTMAX removed, so the model outputs the logits (what an
    integer model that leaves the softmax to the caller computes), everything else as stored."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as S

    m = S.ModelT.InitFromPackedBuf(bytearray(data), 0)
    sg = m.subgraphs[0]
    names = {v: k for k, v in vars(S.BuiltinOperator).items() if not k.startswith("_")}
    last = sg.operators[-1]
    code = m.operatorCodes[last.opcodeIndex]
    if names.get(max(code.builtinCode, code.deprecatedBuiltinCode)) != "SOFTMAX":
        return data
    sg.operators = sg.operators[:-1]
    sg.outputs = [int(last.inputs[0])]
    b = flatbuffers.Builder(len(data) + 1024)
    b.Finish(m.Pack(b), file_identifier=b"TFL3")
    return bytes(b.Output())


MLPERF_DIR = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "shared", "models", "mlperf-tiny"))
INT8_FILES = {"ic": "pretrainedResnet_quant.tflite", "kws": "kws_ref_model.tflite"}
N = 100
HAVE_QEMU = shutil.which("qemu-system-arm") is not None and shutil.which("arm-none-eabi-gcc") is not None


def mlperf_path(key: str) -> str:
    path = os.path.join(MLPERF_DIR, INT8_FILES[key])
    if not os.path.isfile(path):
        pytest.skip(f"MLPerf Tiny model absent: {path} (CI provides ../shared/models/mlperf-tiny)")
    return path


def random_int8(graph, n=N, seed=0):
    return np.random.default_rng(seed).integers(-128, 128, (n, *graph.input_shape)).astype(np.int8)


@pytest.mark.parametrize("key", ["ic", "kws"])
def test_mlperf_int8_kept_exactly_matches_tflite_micro_on_reference_and_host(key, tmp_path):
    path = mlperf_path(key)
    g = import_tflite(path)
    qm = quantize_graph(g, None, "uniform", 8, name=key)
    assert qm.meta["kept_from_file"]["weights"].startswith("int8 weights")
    assert qm.graph.nodes[-1].op == "softmax"  # the file's last operator runs on the device too
    xq = random_int8(g)
    ref = run_int(qm, xq).reshape(N, -1)
    with open(path, "rb") as f:
        original = f.read()
    tflm = run_tflm(original, xq.transpose(0, 2, 3, 1))
    assert ref.shape == tflm.shape
    assert int((ref != tflm).any(axis=1).sum()) == 0
    # Leaving the softmax to the caller: the logits, equal to TFLite Micro's on the file without it.
    logits = quantize_graph(g, None, "uniform", 8, name=key, keep_softmax=False)
    assert logits.graph.nodes[-1].op != "softmax"
    np.testing.assert_array_equal(run_int(logits, xq).reshape(N, -1),
                                  run_tflm(without_final_softmax(original), xq.transpose(0, 2, 3, 1)))
    for dsp in (False, True):  # the portable path and the DSP path (intrinsics emulated)
        hb = build.build_host(qm, str(tmp_path / f"dsp{dsp}"), dsp=dsp)
        dev = from_device(build.run_host(hb.runner, to_device(xq)), qm.graph.output_shape)
        np.testing.assert_array_equal(dev.reshape(N, -1), ref)


@pytest.mark.skipif(not HAVE_QEMU, reason="make setup installs qemu-system-arm and arm-none-eabi-gcc")
@pytest.mark.parametrize("key", ["ic", "kws"])
def test_mlperf_int8_kept_exactly_on_the_emulated_stm32(key, tmp_path):
    model = str(tmp_path / f"{key}.nq")
    api.quantize(mlperf_path(key), None, "uniform", 8, model, progress=False)
    _, report = api.run_emulated(model, "stm32", str(tmp_path / "fw"), data="random", n=N, progress=False)
    assert report.n == N and report.mismatches == 0, report.first_diffs


def test_exported_kept_model_gives_the_original_outputs(tmp_path):
    path = mlperf_path("kws")
    qm = quantize_graph(import_tflite(path), None, "uniform", 8, name="kws")
    again = tflite_export.export(qm, "int8")
    x = random_int8(qm.graph, 50, seed=1).transpose(0, 2, 3, 1)
    with open(path, "rb") as f:
        original = f.read()
    np.testing.assert_array_equal(run_tflm(again, x), run_tflm(original, x))  # the final SOFTMAX included


@pytest.fixture(scope="module")
def digits_int8(digits_graph, digits_calib):
    """The bundled digits model quantized by nupes-edge (uniform W8) and exported as an int8 .tflite."""
    qm = quantize_graph(digits_graph, digits_calib, "uniform", 8, name="digits")
    return qm, tflite_export.export(qm, "int8")


def test_own_int8_export_comes_back_with_the_same_integer_parameters(digits_int8):
    qm, data = digits_int8
    back = quantize_graph(import_tflite_bytes(data, "digits.tflite"), None, "uniform", 8, name="digits")
    from nupes_edge.layout import weights_hwc

    producers = {n.output: n for n in qm.graph.nodes}
    for node, node_back in zip(qm.graph.weight_nodes(), back.graph.weight_nodes(), strict=True):
        p, q = qm.params[node.name], back.params[node_back.name]
        for field in ("bias", "mult", "shift"):
            np.testing.assert_array_equal(getattr(p, field), getattr(q, field), err_msg=f"{node.name}.{field}")
        # the codes in the device's order: a dense layer after PyTorch's Flatten has its columns in C, H, W
        # order, the file's (and so the re-imported layer's) are in H, W, C order
        src = producers.get(node.inputs[0])
        flat = qm.graph.shapes[src.inputs[0]] if src is not None and src.op == "flatten" else None
        np.testing.assert_array_equal(weights_hwc(p.codes, node.op, flat), weights_hwc(q.codes, node_back.op),
                                      err_msg=f"{node.name}.codes")
    xq = random_int8(qm.graph, 50)
    np.testing.assert_array_equal(run_int(back, xq), run_int(qm, xq))


def test_data_free_requantization_keeps_the_files_activation_quantization(digits_int8):
    _, data = digits_int8
    g = import_tflite_bytes(data, "digits.tflite")
    qm = quantize_graph(g, None, "powerquant", 4, name="digits")
    assert {t: (a.scale, a.zero_point) for t, a in qm.act.items()} == {t: g.file_quant.act[t] for t in qm.act}
    assert qm.meta["kept_from_file"]["weights"].startswith("re-quantized")
    assert {p.bits for p in qm.weights.values()} == {4}
    with pytest.raises(NupesError, match="nupes learns from data"):
        quantize_graph(g, None, "nupes", 4)
    with pytest.raises(NupesError, match="calibration data is needed"):
        quantize_graph(g, None, "uniform", 8, recalibrate=True)


def test_cli_quantizes_an_int8_file_without_data_and_verify_asks_for_inputs(digits_int8, tmp_path):
    (tmp_path / "d.tflite").write_bytes(digits_int8[1])
    r = cli("quantize", str(tmp_path / "d.tflite"), "--method", "uniform", "--wbits", "8", "-o", str(tmp_path / "d.nq"))
    assert r.returncode == 0, r.stderr
    assert "from the .tflite file: activation scales and zero points" in r.stdout
    assert artifact.load(str(tmp_path / "d.nq")).meta["calibration"]["n"] == 0
    r = cli("verify", str(tmp_path / "d.nq"), "--board", "host")
    assert r.returncode == 2 and "--data random" in r.stderr and "Traceback" not in r.stderr
    r = cli("verify", str(tmp_path / "d.nq"), "--board", "host", "--data", "random", "-n", "20")
    assert r.returncode == 0 and "mismatches        0" in r.stdout, r.stdout + r.stderr
    r = cli("quantize", str(tmp_path / "d.tflite"), "--method", "nupes", "-o", str(tmp_path / "n.nq"))
    assert r.returncode == 2 and "learns from data" in r.stderr


def test_keep_softmax_on_a_float_model_runs_it_on_the_host_build_and_exports_bit_exact(tmp_path):
    from nupes_edge.ir import Graph, Node, infer_shapes

    rng = np.random.default_rng(3)
    conv = Node("c", "conv2d", ["x"], "y", {"stride": [1, 1], "pads": [1, 1, 1, 1], "groups": 1, "act": "relu"},
                rng.normal(0, 0.5, (8, 3, 3, 3)).astype(np.float32), rng.normal(0, 0.1, 8).astype(np.float32))
    pool = Node("p", "global_avgpool", ["y"], "z", {})
    flat = Node("f", "flatten", ["z"], "v", {})
    fc = Node("l", "linear", ["v"], "logits", {"act": "none"}, rng.normal(0, 1, (10, 8)).astype(np.float32),
              rng.normal(0, 0.1, 10).astype(np.float32))
    g = Graph("x", (3, 6, 6), "logits", [conv, pool, flat, fc], output_softmax=True)
    infer_shapes(g)
    x = rng.normal(0, 1, (64, 3, 6, 6)).astype(np.float32)
    qm = quantize_graph(g, x, "uniform", 8, name="sm", keep_softmax=True)
    assert qm.graph.nodes[-1].op == "softmax" and qm.act[qm.graph.output_name].zero_point == -128
    xq = random_int8(qm.graph, 40)
    ref = run_int(qm, xq).reshape(40, -1)
    assert ref.min() >= -128 and (ref.astype(int) + 128).sum(axis=1).min() > 200  # probabilities ~ 256/256
    hb = build.build_host(qm, str(tmp_path), sanitize=True, dsp=True)
    np.testing.assert_array_equal(from_device(build.run_host(hb.runner, to_device(xq)), qm.graph.output_shape)
                                  .reshape(40, -1), ref)
    back = artifact.loads(artifact.dumps(qm))  # the softmax parameters survive model.nq
    np.testing.assert_array_equal(run_int(back, xq).reshape(40, -1), ref)
    exported = tflite_export.export(qm, "int8")
    np.testing.assert_array_equal(run_tflm(exported, xq.transpose(0, 2, 3, 1)), ref)


def test_learning_from_data_keeps_the_files_activations_unless_recalibrated(digits_int8, digits_calib):
    from nupes_edge.quant.reconstruct import ReconConfig

    _, data = digits_int8
    g = import_tflite_bytes(data, "digits.tflite")
    x = digits_calib[:128]
    file_act = {t: g.file_quant.act[t] for t in g.shapes}
    learned = quantize_graph(g, x, "nupes", 4, name="digits", recon=ReconConfig(iters=20, batch=32))
    assert {t: (a.scale, a.zero_point) for t, a in learned.act.items()} == file_act
    assert learned.meta["kept_from_file"]["weights"].startswith("re-quantized")
    again = quantize_graph(g, x, "uniform", 8, name="digits", recalibrate=True)
    assert "kept_from_file" not in again.meta
    assert {t: (a.scale, a.zero_point) for t, a in again.act.items()} != file_act
