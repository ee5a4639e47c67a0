"""UNIDIRECTIONAL_SEQUENCE_LSTM (int8, int16 cell state) against TFLite Micro on files built here:
sizes of 1, 3 and 17 units, one to nine steps, cell state scales on both sides of 2^-12 (the int16
tanh's left-shift and rounding right-shift forms), no clip / a clip that bites, hidden zero points
0 / -4 / 50, gates driven into saturation, and inputs at the int8 extremes. The integer reference
must equal TFLite Micro on the file, and the host build (portable and DSP, sanitized) the reference."""
import os
import re

import numpy as np
import pytest
import torch
from ai_edge_litert import schema_py_generated as S

from nupes_edge import build, tflite_export
from nupes_edge.errors import NupesError
from nupes_edge.importers import import_tflite_bytes
from nupes_edge.interpreters import run_litert, run_tflm
from nupes_edge.intref import run_int
from nupes_edge.intref.lstm import sigmoid_int16, sigmoid_table, tanh_int16
from nupes_edge.layout import to_device
from nupes_edge.quant.driver import quantize_graph

RUNTIME = os.path.join(os.path.dirname(__file__), "..", "runtime_c")


def lstm_file(rng, steps, feats, units, *, cell_power=-12, clip=10.0, hid_zp=0, w_scale=0.02, bias_range=3000,
              in_q=(0.05, -3), hid_scale=0.008) -> bytes:
    """One int8 LSTM as TFLite's converter writes it: [1, T, F] in, [1, T, S] out, int16 cell state."""
    b = tflite_export._Builder()
    x = b.tensor("x", [1, steps, feats], np.int8, scale=in_q[0], zp=in_q[1])
    ws = [b.tensor(f"w{j}", [units, feats if j < 4 else units], np.int8,
                   rng.integers(-127, 128, (units, feats if j < 4 else units)).astype(np.int8),
                   scale=float(np.float32(w_scale * rng.uniform(0.5, 2.0))), zp=0) for j in range(8)]
    bs = [b.tensor(f"b{g}", [units], np.int32, rng.integers(-bias_range, bias_range + 1, units).astype(np.int32),
                   scale=float(np.float32(in_q[0]) * np.float32(b.tensors[ws[g]].quantization.scale[0])), zp=0)
          for g in range(4)]
    h = b.tensor("h", [1, units], np.int8, scale=hid_scale, zp=hid_zp)
    c = b.tensor("c", [1, units], np.int16, scale=2.0 ** cell_power, zp=0)
    for t in (h, c):
        b.tensors[t].isVariable = True
    y = b.tensor("y", [1, steps, units], np.int8, scale=hid_scale, zp=hid_zp)
    o = S.UnidirectionalSequenceLSTMOptionsT()
    o.fusedActivationFunction, o.cellClip, o.timeMajor = S.ActivationFunctionType.TANH, clip, False
    b.op(S.BuiltinOperator.UNIDIRECTIONAL_SEQUENCE_LSTM, 1,
         [x, *ws, -1, -1, -1, *bs, -1, -1, h, c, -1, -1, -1, -1], [y], S.BuiltinOptions.UnidirectionalSequenceLSTMOptions, o)
    return b.finish([x], [y], "lstm test")


CASES = {  # name: (steps, features, units, options)
    "one_unit": (5, 3, 1, {}),
    "three_units_clip_bites": (9, 5, 3, {"clip": 0.5, "hid_zp": -4}),
    "seventeen_units_coarse_cell": (4, 33, 17, {"cell_power": -9, "hid_zp": 50}),
    "fine_cell_rounding_shift": (6, 7, 3, {"cell_power": -15, "clip": 0.0}),
    "saturating_gates": (3, 16, 5, {"w_scale": 0.5, "bias_range": 20000, "in_q": (0.2, 10)}),
    "single_step": (1, 12, 8, {"cell_power": -11}),
}


def _inputs(rng, steps, feats, n=12):
    x = rng.integers(-128, 128, (n, steps, feats)).astype(np.int8)
    x[0], x[1] = -128, 127  # the extremes
    return x


@pytest.mark.parametrize("case", sorted(CASES))
def test_lstm_equals_tflite_micro_and_the_host_build(case, tmp_path):
    steps, feats, units, opts = CASES[case]
    rng = np.random.default_rng(len(case))
    data = lstm_file(rng, steps, feats, units, **opts)
    g = import_tflite_bytes(data, f"{case}.tflite")
    qm = quantize_graph(g, None, "uniform", 8, name=case)
    x = _inputs(rng, steps, feats)
    want = run_tflm(data, x).reshape(len(x), -1)
    xq = x.transpose(0, 2, 1)[:, :, None, :]  # (N, T, F) -> the IR's F x 1 x T
    ref = to_device(run_int(qm, xq))
    np.testing.assert_array_equal(ref, want)
    assert len(np.unique(want)) > 2, "the case must exercise more than saturated outputs"
    for dsp in (False, True):
        hb = build.build_host(qm, str(tmp_path / f"dsp{int(dsp)}"), sanitize=True, dsp=dsp)
        np.testing.assert_array_equal(build.run_host(hb.runner, to_device(xq)), ref)
    again = run_tflm(tflite_export.export(qm, "int8"), to_device(xq)).reshape(len(x), -1)
    np.testing.assert_array_equal(again, want)  # the exported file is the same model


def test_each_inference_starts_from_the_reset_state():
    """TFLite Micro keeps an LSTM's state between Invoke()s until reset; a nupes-edge inference is one
    whole sequence, so the same input gives the same output whatever ran before."""
    rng = np.random.default_rng(5)
    data = lstm_file(rng, 3, 4, 6, hid_zp=7)
    qm = quantize_graph(import_tflite_bytes(data, "t.tflite"), None, "uniform", 8)
    x = _inputs(rng, 3, 4, n=4)
    xq = x.transpose(0, 2, 1)[:, :, None, :]
    first = to_device(run_int(qm, xq[[2]]))
    np.testing.assert_array_equal(to_device(run_int(qm, xq))[2], first[0])
    np.testing.assert_array_equal(run_tflm(data, x)[2], first[0])


def test_the_c_table_is_the_one_the_reference_makes():
    src = open(os.path.join(RUNTIME, "nupes_lstm_gates.h")).read()
    body = re.search(r"nupes_sigmoid_q16\[256\] = \{([^}]*)\}", src).group(1)
    assert tuple(int(v) for v in body.replace("\n", " ").split(",") if v.strip()) == sigmoid_table()
    t = np.asarray(sigmoid_table())
    assert t[0] == 32768 and t[-1] == 65535 and np.all(np.diff(t) >= 0)


def test_int16_sigmoid_and_tanh_follow_the_functions_within_two_codes():
    """The table made from its definition, interpolated as TFLite does, over every Q3.12 input."""
    x = np.arange(-32768, 32768, dtype=np.int64)
    s = sigmoid_int16(x)
    assert np.all(np.diff(s) >= 0)
    assert np.abs(s - 32768 / (1 + np.exp(-x / 4096))).max() <= 2
    th = tanh_int16(x, 3, 0)
    assert np.all(np.diff(th) >= 0)
    assert np.abs(th - 32768 * np.tanh(x / 4096)).max() <= 2


def test_variants_tflite_micro_refuses_are_refused_by_name():
    rng = np.random.default_rng(0)
    data = bytearray(lstm_file(rng, 2, 3, 2))
    m = S.ModelT.InitFromObj(S.Model.GetRootAsModel(bytes(data), 0))
    m.subgraphs[0].operators[0].builtinOptions.timeMajor = True
    import flatbuffers

    fb = flatbuffers.Builder(1024)
    fb.Finish(m.Pack(fb), file_identifier=b"TFL3")
    with pytest.raises(NupesError, match="time-major"):
        import_tflite_bytes(bytes(fb.Output()), "time_major.tflite")


def float_lstm_file(rng, steps, feats, units, clip=0.0) -> bytes:
    """A float32 LSTM as TFLite's converter writes one before quantization (float states)."""
    b = tflite_export._Builder()
    x = b.tensor("x", [1, steps, feats], np.float32)
    ws = [b.tensor(f"w{j}", [units, feats if j < 4 else units], np.float32,
                   rng.normal(0, 0.4, (units, feats if j < 4 else units)).astype(np.float32)) for j in range(8)]
    bs = [b.tensor(f"b{g}", [units], np.float32, rng.normal(1.0 if g == 1 else 0.0, 0.3, units).astype(np.float32))
          for g in range(4)]
    h = b.tensor("h", [1, units], np.float32)
    c = b.tensor("c", [1, units], np.float32)
    for t in (h, c):
        b.tensors[t].isVariable = True
    y = b.tensor("y", [1, steps, units], np.float32)
    o = S.UnidirectionalSequenceLSTMOptionsT()
    o.fusedActivationFunction, o.cellClip, o.timeMajor = S.ActivationFunctionType.TANH, clip, False
    b.op(S.BuiltinOperator.UNIDIRECTIONAL_SEQUENCE_LSTM, 1,
         [x, *ws, -1, -1, -1, *bs, -1, -1, h, c, -1, -1, -1, -1], [y], S.BuiltinOptions.UnidirectionalSequenceLSTMOptions, o)
    return b.finish([x], [y], "float lstm test")


def _sqnr(ref, got):
    return 10 * np.log10((ref ** 2).sum() / max(((got - ref) ** 2).sum(), 1e-30))


@pytest.mark.parametrize("method,bits", [("uniform", 4), ("powerquant", 4), ("nupes", 3), ("uniform-mse", 6)])
def test_requantized_lstm_weights_take_the_methods_levels_and_tflite_micro_agrees(method, bits, tmp_path):
    """An int8 LSTM file re-quantized: each gate matrix holds at most 2^b - 1 values, the cell state's
    scale stays the file's, and the exported int8 file (the re-quantized weights) gives under TFLite
    Micro exactly what the reference and the host build give."""
    steps, feats, units, opts = CASES["three_units_clip_bites"]
    rng = np.random.default_rng(11)
    data = lstm_file(rng, steps, feats, units, **opts)
    g = import_tflite_bytes(data, "l.tflite")
    x = _inputs(rng, steps, feats, n=40)
    xq = x.transpose(0, 2, 1)[:, :, None, :]
    s_in, zp_in = g.file_quant.act[g.input_name]
    calib = (xq[:32].astype(np.float32) - zp_in) * s_in
    qm = quantize_graph(g, calib, method, bits, name="l")
    p = qm.params[g.nodes[0].name]
    for w in (*p.w_in, *p.w_rec):
        assert len(np.unique(w)) <= 2 ** bits - 1
    assert p.cell_scale == g.file_quant.lstms[g.nodes[0].name]["cell_scale"]
    assert "re-quantized with " + method in qm.meta["kept_from_file"]["lstm"]
    ref = to_device(run_int(qm, xq))
    np.testing.assert_array_equal(run_tflm(tflite_export.export(qm, "int8"), x).reshape(len(x), -1), ref)
    hb = build.build_host(qm, str(tmp_path), sanitize=True)
    np.testing.assert_array_equal(build.run_host(hb.runner, to_device(xq)), ref)
    want = run_tflm(data, x).reshape(len(x), -1).astype(np.float64)
    s_out, zp_out = g.file_quant.act[g.output_name]
    # against the int8 file's own output: a loose floor, 3 dB a bit less 6 (measured 6.8 to 26 dB)
    assert _sqnr((want - zp_out) * s_out, (ref.astype(np.float64) - zp_out) * s_out) > 3 * bits - 6


@pytest.mark.parametrize("clip", [0.0, 1.5])
def test_float_lstm_quantizes_to_tflite_micros_int8_lstm(clip, tmp_path):
    """A float32 LSTM file: quantized from calibration data (the cell state's scale a power of two over
    the largest value the recurrence can reach), close to LiteRT's float result, and exactly what
    TFLite Micro computes on the exported int8 file."""
    steps, feats, units = 7, 5, 6
    rng = np.random.default_rng(int(clip * 10) + 3)
    data = float_lstm_file(rng, steps, feats, units, clip=clip)
    g = import_tflite_bytes(data, "f.tflite")
    assert g.file_quant is None
    x = rng.normal(0, 1, (48, steps, feats)).astype(np.float32)
    want = run_litert(data, x).reshape(len(x), -1)
    xg = x.transpose(0, 2, 1)[:, :, None, :]
    for method, bits, floor in (("uniform", 8, 25), ("nupes", 4, 14)):
        qm = quantize_graph(g, xg[:32], method, bits, name="f")
        assert qm.params[g.nodes[0].name].cell_scale == 2.0 ** (np.ceil(np.log2(min(steps, clip) if clip else steps)) - 15)
        qi, qo = qm.act[g.input_name], qm.act[g.output_name]
        xq = np.clip(np.round(xg / qi.scale) + qi.zero_point, -128, 127).astype(np.int64)
        ref = to_device(run_int(qm, xq))
        rows = to_device(xq).astype(np.int8)
        np.testing.assert_array_equal(run_tflm(tflite_export.export(qm, "int8"), rows).reshape(len(x), -1), ref)
        real = (ref[32:].astype(np.float64) - qo.zero_point) * qo.scale
        assert _sqnr(want[32:], real) > floor, (method, bits)
    hb = build.build_host(qm, str(tmp_path), sanitize=True)
    np.testing.assert_array_equal(build.run_host(hb.runner, to_device(xq)), ref)


class _LastStep(torch.nn.Module):
    def __init__(self, layers=1):
        super().__init__()
        self.lstm = torch.nn.LSTM(5, 6, num_layers=layers, batch_first=True)
        self.fc = torch.nn.Linear(6, 3)

    def forward(self, x):
        y, _ = self.lstm(x)
        return self.fc(y[:, -1])


class _Sequence(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.a = torch.nn.LSTM(4, 7, batch_first=True)
        self.b = torch.nn.LSTM(7, 3, batch_first=True, bias=False)

    def forward(self, x):
        return self.b(self.a(x)[0])[0]


@pytest.mark.parametrize("make,shape,lstms", [(lambda: _LastStep(), (9, 5), 1), (lambda: _LastStep(2), (4, 5), 2),
                                               (_Sequence, (6, 4), 2)], ids=["last_step_fc", "two_layers", "stacked_sequence"])
def test_pytorch_lstm_imports_to_tflite_micros_int8_lstm(make, shape, lstms, tmp_path):
    """nn.LSTM (batch_first) becomes the same lstm node as a .tflite's: the float model equals PyTorch,
    the int8 model equals TFLite Micro on its exported file and the host build, and stays close to PyTorch."""
    from nupes_edge.importers import import_module
    from nupes_edge.torch_exec import run as run_float

    torch.manual_seed(sum(shape))
    m = make().eval()
    x = torch.randn(48, *shape)
    g = import_module(m, x[:1], name="lstm")
    assert sum(n.op == "lstm" for n in g.nodes) == lstms
    xg = x[:, :, None, :]  # N x T x F, read as N x C x L
    with torch.no_grad():
        want = m(x).reshape(len(x), -1).numpy()
        got = to_device(run_float(g, xg).numpy()).reshape(len(x), -1)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    qm = quantize_graph(g, xg[:32].numpy(), "uniform", 8, name="lstm")
    qi, qo = qm.act[g.input_name], qm.act[g.output_name]
    xq = np.clip(np.round(xg.numpy() / qi.scale) + qi.zero_point, -128, 127).astype(np.int8)
    ref = to_device(run_int(qm, xq)).reshape(len(x), -1)
    np.testing.assert_array_equal(run_tflm(tflite_export.export(qm, "int8"), to_device(xq)).reshape(len(x), -1), ref)
    hb = build.build_host(qm, str(tmp_path), sanitize=True)
    np.testing.assert_array_equal(build.run_host(hb.runner, to_device(xq)).reshape(len(x), -1), ref)
    sq = _sqnr(want[32:], (ref[32:].astype(np.float64) - qo.zero_point) * qo.scale)
    assert sq > 20


@pytest.mark.parametrize("module,match", [(torch.nn.GRU(3, 4, batch_first=True), "aten.gru.input: TFLite Micro has no GRU kernel"),
                                          (torch.nn.LSTM(3, 4, batch_first=True, bidirectional=True), "bidirectional"),
                                          (torch.nn.LSTM(3, 4), "batch_first=False")])
def test_pytorch_recurrent_layers_without_a_tflite_micro_kernel_are_refused_by_name(module, match):
    from nupes_edge.importers import import_module

    class Wrap(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.r = module

        def forward(self, x):
            return self.r(x)[0]

    with pytest.raises(NupesError, match=match):
        import_module(Wrap().eval(), torch.randn(1, 5, 3))


def test_cli_quantizes_a_model_of_lstms_only(tmp_path):
    """A file holding only an LSTM has no conv or dense layer to list: quantize must still report it
    (it used to fail with an internal error after writing the file)."""
    from tests.test_cli import cli

    (tmp_path / "l.tflite").write_bytes(lstm_file(np.random.default_rng(4), 5, 4, 6))
    np.savez(tmp_path / "seq.npz", x=np.random.default_rng(5).normal(0, 1, (16, 5, 4)).astype(np.float32))
    r = cli("quantize", "l.tflite", "--method", "uniform", "--wbits", "4", "--data", "seq.npz", "-o", "l.nq", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "W4A8" in r.stdout and "re-quantized with uniform to 4-bit levels" in r.stdout
    v = cli("verify", "l.nq", "--board", "host", "--data", "random", "-n", "10", cwd=tmp_path)
    assert v.returncode == 0 and "mismatches        0" in v.stdout, v.stdout + v.stderr


def test_per_layer_bits_name_an_lstm():
    """--layer-wbits may pin an LSTM's bits (its weights are stored one byte each whatever the bits): at 8,
    an LSTM of an int8 file keeps the file's own weights while the other layers go to 4."""
    rng = np.random.default_rng(8)
    data = lstm_file(rng, 4, 5, 6)
    g = import_tflite_bytes(data, "l.tflite")
    name = g.nodes[0].name
    qm4 = quantize_graph(g, None, "powerquant", 4)
    qm8 = quantize_graph(g, None, "powerquant", 4, overrides={name: 8})
    assert max(len(np.unique(w)) for w in qm4.params[name].w_in) <= 15
    np.testing.assert_array_equal(qm8.params[name].w_in, g.file_quant.lstms[name]["w_in"])
    assert "kept as stored" in qm8.meta["kept_from_file"]["lstm"]
    kept = quantize_graph(g, None, "uniform", 8, name="k")  # every weight at 8 bits, uniform: the file's own
    assert "kept as stored" in kept.meta["kept_from_file"]["lstm"]
    np.testing.assert_array_equal(kept.params[name].w_in, g.file_quant.lstms[name]["w_in"])
    with pytest.raises(NupesError, match="no weight layer named 'nope'"):
        quantize_graph(g, None, "uniform", 4, overrides={"nope": 8})


@pytest.mark.parametrize("reader,match", [
    (lambda y, h: torch.cat([y, y], dim=1), "output sequence can feed another LSTM"),
    (lambda y, h: y.flatten(1), "output sequence can feed another LSTM"),
    (lambda y, h: h[-1], r"final states \(h_n, c_n\).*y\[:, -1\]")], ids=["cat", "flatten", "h_n"])
def test_what_reads_an_lstms_output_otherwise_is_refused_by_name(reader, match):
    """The output sequence (N x T x H) has the IR's H x 1 x T bytes, not the N x C x H x W the other layers
    read: anything but another LSTM, one step or the model output is refused (torch.cat of a list too)."""
    from nupes_edge.importers import import_module

    class M(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm = torch.nn.LSTM(3, 4, batch_first=True)

        def forward(self, x):
            y, (h, _) = self.lstm(x)
            return reader(y, h)

    with pytest.raises(NupesError, match=match):
        import_module(M().eval(), torch.randn(1, 5, 3))


def test_a_flash_budget_counts_the_lstms_bytes():
    """An LSTM's weights do not shrink with the bits: a flash budget is met with them counted, and the
    build's own count of the model's weights agrees (the allocator ignored them before)."""
    from nupes_edge.codegen.plan import plan
    from nupes_edge.importers import import_module
    from nupes_edge.quant.mixed import stateful_flash_bytes

    torch.manual_seed(0)
    m = _LastStep().eval()
    x = torch.randn(64, 9, 5)
    g = import_module(m, x[:1], name="lstm")
    fixed = stateful_flash_bytes(g)
    assert fixed == 4 * 6 * (5 + 6) + 2 * 4 * 4 * 6
    with pytest.raises(NupesError, match="below the smallest model"):
        quantize_graph(g, x[:, :, None, :].numpy(), "powerquant", 4, flash_budget=fixed)
    qm = quantize_graph(g, x[:, :, None, :].numpy(), "powerquant", 4, flash_budget=fixed + 400)
    fb = qm.meta["flash_budget"]
    assert fixed < fb["flash_bytes"] <= fixed + 400
    r = plan(qm).report
    assert r["flash_weights_bound_bytes"] >= r["flash_weights_bytes"] > fixed
    assert r["flash_weights_bytes"] + r["flash_tables_bytes"] + r["flash_meta_bytes"] == fb["flash_bytes"]
