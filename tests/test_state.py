"""The "carry" state mode (nupes_edge/state.py): an LSTM's hidden and cell state and an SVDF's activation
state persist from one inference to the next, as TFLite Micro runs a streaming model (its variables
persist across Invoke() until reset). A batch of inputs is one sequence. On int8 files built here and
the public DTLN noise suppressor: the integer reference equals TFLite Micro invoked on the same sequence
without resets (and differs from the reset mode's outputs: the state matters), the host build (portable
and DSP, sanitized) the reference, the emulated STM32 the reference and the file; the firmware's RESET
frame and a repeated RUN; the float model carried; refusals (a model with nothing to carry, a tampered
meta.state, an SVDF whose carried sums could overflow int32)."""
import io
import json
import os
import shutil
import subprocess
import sys
import zipfile

import numpy as np
import pytest
import torch

from nupes_edge import api, artifact, build, torch_exec
from nupes_edge.cli import main as cli_main
from nupes_edge.errors import NupesError
from nupes_edge.importers import import_tflite, import_tflite_bytes
from nupes_edge.interpreters import run_tflm
from nupes_edge.intref import run_int
from nupes_edge.layout import to_device
from nupes_edge.oracle import run_source
from nupes_edge.quant.driver import quantize_graph

sys.path.insert(0, os.path.dirname(__file__))
from test_lstm import lstm_file  # noqa: E402
from test_svdf import CASES as SVDF_CASES, chain_file, svdf_file  # noqa: E402

SHARED = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "shared"))
DTLN = os.path.join(SHARED, "models", "zoo", "tflm_dtln_noise_suppression.tflite")
HAVE_QEMU = shutil.which("qemu-system-arm") is not None and shutil.which("arm-none-eabi-gcc") is not None
ROWS = 14

LSTM_CASES = {  # name: (steps, features, units, options): from tests/test_lstm.py's kinds
    "three_units_clip_bites": (4, 5, 3, {"clip": 0.5, "hid_zp": -4}),
    "seventeen_units_coarse_cell": (3, 33, 17, {"cell_power": -9, "hid_zp": 50}),
    "single_step_fine_cell": (1, 12, 8, {"cell_power": -15, "clip": 0.0}),
}
# the SVDF cases of tests/test_svdf.py whose carried sums stay in int32 (the other two are refused below)
SVDF_CARRY = sorted(set(SVDF_CASES) - {"rank_1_33_inputs_left_shift", "int16_state_saturates_relu"})


def _lstm(case):
    steps, feats, units, opts = LSTM_CASES[case]
    rng = np.random.default_rng(len(case))
    data = lstm_file(rng, steps, feats, units, **opts)
    x = rng.integers(-128, 128, (ROWS, steps, feats)).astype(np.int8)
    x[0], x[5] = -128, 127
    return data, x, x.transpose(0, 2, 1)[:, :, None, :]  # the file's rows, the IR's F x 1 x T


def _svdf(case):
    n_in, units, rank, memory, opts = SVDF_CASES[case]
    rng = np.random.default_rng(len(case))
    data = svdf_file(rng, n_in, units, rank, memory, **opts)
    x = rng.integers(-128, 128, (ROWS, n_in)).astype(np.int8)
    x[0], x[5] = -128, 127
    return data, x, x


def _check(data: bytes, name: str, x_file: np.ndarray, xq: np.ndarray, tmp_path) -> np.ndarray:
    """A carry model of the file: reference == TFLite Micro on the sequence, != the reset outputs; the
    host builds == the reference. Returns the reference's rows."""
    g = import_tflite_bytes(data, f"{name}.tflite")
    qm = quantize_graph(g, None, "uniform", 8, name=name, state="carry")
    assert qm.meta["state"] == "carry"
    want = run_tflm(data, x_file, carry=True).reshape(len(x_file), -1)
    ref = to_device(run_int(qm, xq)).reshape(len(xq), -1)
    np.testing.assert_array_equal(ref, want)
    reset = run_tflm(data, x_file).reshape(len(x_file), -1)
    reset_ref = to_device(run_int(quantize_graph(g, None, "uniform", 8, name=name), xq)).reshape(len(xq), -1)
    np.testing.assert_array_equal(reset_ref, reset)  # the reset mode unchanged
    assert (reset != want).any(axis=1).sum() >= len(x_file) // 2, "the carried state must change the outputs"
    np.testing.assert_array_equal(ref[0], reset[0])  # the first inference starts from the reset state
    for dsp in (False, True):
        hb = build.build_host(qm, str(tmp_path / f"dsp{int(dsp)}"), sanitize=True, dsp=dsp)
        np.testing.assert_array_equal(build.run_host(hb.runner, to_device(xq)).reshape(len(xq), -1), ref)
        assert hb.generated.report["state_bytes"] > 0
    return ref


@pytest.mark.parametrize("case", sorted(LSTM_CASES))
def test_carried_lstm_equals_tflite_micro_on_the_sequence_and_the_host_build(case, tmp_path):
    data, x, xq = _lstm(case)
    _check(data, case, x, xq, tmp_path)


@pytest.mark.parametrize("case", SVDF_CARRY)
def test_carried_svdf_equals_tflite_micro_on_the_sequence_and_the_host_build(case, tmp_path):
    if case == "one_filter_memory_1":  # a memory of 1 has no past: carry and reset are the same model
        data, x, xq = _svdf(case)
        qm = quantize_graph(import_tflite_bytes(data, "m1.tflite"), None, "uniform", 8, state="carry")
        np.testing.assert_array_equal(run_int(qm, xq).reshape(len(x), -1), run_tflm(data, x).reshape(len(x), -1))
        return
    data, x, xq = _svdf(case)
    _check(data, case, x, xq, tmp_path)


def test_carried_svdf_chain_equals_tflite_micro(tmp_path):
    rng = np.random.default_rng(5)
    x = rng.integers(-128, 128, (ROWS, 24)).astype(np.int8)
    _check(chain_file(np.random.default_rng(1)), "chain", x, x, tmp_path)


def test_a_long_sequence_is_not_cut_into_chunks():
    """run_int runs reset models in chunks of 64 rows; a carry model's 150 rows are one sequence."""
    data = chain_file(np.random.default_rng(1))
    qm = quantize_graph(import_tflite_bytes(data, "chain.tflite"), None, "uniform", 8, state="carry")
    x = np.random.default_rng(9).integers(-128, 128, (150, 24)).astype(np.int8)
    np.testing.assert_array_equal(run_int(qm, x).reshape(150, -1), run_tflm(data, x, carry=True).reshape(150, -1))


@pytest.mark.parametrize("case", ["rank_1_33_inputs_left_shift", "int16_state_saturates_relu"])
def test_an_svdf_whose_carried_sums_can_overflow_is_refused(case):
    """From the reset state only the newest time weights count; a carried state meets them all, and these
    files' unit sums can then leave int32 (TFLite Micro's too: no defined result). The reset mode keeps them."""
    data, x, _ = _svdf(case)
    g = import_tflite_bytes(data, f"{case}.tflite")
    with pytest.raises(NupesError, match="overflow int32 when the state is carried"):
        quantize_graph(g, None, "uniform", 8, state="carry")
    quantize_graph(g, None, "uniform", 8)


def test_the_float_lstm_carries_its_state():
    """Carrying the float LSTM's state across rows of T steps is running one sequence of N x T steps."""
    data, x, _ = _lstm("three_units_clip_bites")
    g = quantize_graph(import_tflite_bytes(data, "l.tflite"), None, "uniform", 8).graph
    xf = np.random.default_rng(1).normal(0, 2, (6, *g.input_shape)).astype(np.float32)
    node = next(n for n in g.nodes if n.op == "lstm")
    whole = torch_exec.lstm(node, torch.from_numpy(np.concatenate(list(xf), axis=2)[None])).numpy()[0]
    got = torch_exec.run_numpy(g, xf, carry=True)
    steps = g.input_shape[2]
    for i in range(len(xf)):
        np.testing.assert_allclose(got[i].reshape(whole.shape[0], -1), whole[:, 0, i * steps:(i + 1) * steps],
                                   rtol=1e-5, atol=1e-6)
    assert not np.allclose(got[1:], torch_exec.run_numpy(g, xf)[1:], atol=1e-4)


def test_the_float_svdf_carries_its_state():
    """The float SVDF carried (eval's and verify's float model for a carry model): each filter's output at
    step t sums its time weights over the feature products of the last `memory` inputs (the newest weight
    with the newest), from zeros before the first."""
    data, _, _ = _svdf("rank_2_memory_10_odd_inputs")
    g = quantize_graph(import_tflite_bytes(data, "s.tflite"), None, "uniform", 8).graph
    node = next(n for n in g.nodes if n.op == "svdf")
    w, rank = np.asarray(node.weight, np.float64), int(node.attrs["rank"])
    n_in = g.input_shape[0]
    wf, wt = w[:, :n_in], w[:, n_in:]
    memory = wt.shape[1]
    xf = np.random.default_rng(1).normal(0, 3, (14, n_in)).astype(np.float32)
    a = xf.astype(np.float64) @ wf.T  # (N, F): each step's newest state values
    want = []
    for t in range(len(xf)):
        sums = sum(wt[:, memory - 1 - k] * a[t - k] for k in range(min(memory, t + 1)))
        want.append(sums.reshape(-1, rank).sum(axis=1) + np.asarray(node.bias, np.float64))
    want = np.maximum(np.array(want), 0) if node.act == "relu" else np.array(want)
    got = torch_exec.run_numpy(g, xf, carry=True)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-3)
    assert not np.allclose(got[1:], torch_exec.run_numpy(g, xf)[1:], rtol=1e-3, atol=1e-2)


def test_the_c_api_reset_goes_back_to_the_reset_state(tmp_path):
    """A program that runs a sequence, calls nupes_<name>_reset(), and runs it again gets the same outputs
    twice; a reset model's nupes_<name>_reset() exists and does nothing."""
    from nupes_edge import codegen

    data, x, xq = _svdf("int8_state_wraps_relu")
    for state in ("carry", "reset"):
        qm = quantize_graph(import_tflite_bytes(data, "s.tflite"), None, "uniform", 8, name="s", state=state)
        out = tmp_path / state
        codegen.generate(qm, str(out), name="s")
        rows = ",".join(str(int(v)) for v in x.ravel())
        main = f"""#include <stdio.h>
#include <string.h>
#include "nupes_model_s.h"
static const int8_t in[{len(x)}][NUPES_S_INPUT_SIZE] = {{ {rows} }};
int main(void) {{
    int8_t a[{len(x)}][NUPES_S_OUTPUT_SIZE], b[{len(x)}][NUPES_S_OUTPUT_SIZE];
    int i;
    for (i = 0; i < {len(x)}; ++i) nupes_s_run(in[i], a[i]);
    nupes_s_reset();
    for (i = 0; i < {len(x)}; ++i) nupes_s_run(in[i], b[i]);
    fwrite(a, 1, sizeof a, stdout);
    return memcmp(a, b, sizeof a) != 0 || NUPES_S_CARRIES_STATE != {int(state == "carry")};
}}
"""
        (out / "main.c").write_text(main)
        exe = out / "prog"
        srcs = [str(out / "main.c"), str(out / "nupes_model_s.c"), str(out / "nupes_model_s_data.c")] + \
            sorted(str(out / "runtime" / f) for f in os.listdir(out / "runtime") if f.endswith(".c"))
        subprocess.run(["cc", "-std=c99", "-O1", "-fsanitize=address,undefined", "-fno-sanitize-recover=all",
                        "-DNUPES_NO_DSP", f"-I{out}", f"-I{out / 'runtime'}", *srcs, "-o", str(exe)], check=True)
        r = subprocess.run([str(exe)], capture_output=True, check=False)
        assert r.returncode == 0, r.stderr.decode()[-2000:]
        got = np.frombuffer(r.stdout, np.int8).reshape(len(x), -1)
        want = run_tflm(data, x, carry=state == "carry").reshape(len(x), -1)
        np.testing.assert_array_equal(got, want)


def test_quantize_state_carry_is_refused_for_a_model_with_nothing_to_carry(tmp_path, capsys):
    out = tmp_path / "m.nq"
    rc = cli_main(["quantize", "digits", "--data", "digits", "--method", "uniform", "--wbits", "8", "--state", "carry",
                   "-o", str(out), "--quiet"])
    assert rc == 2 and not out.exists()
    assert "no stateful operator" in capsys.readouterr().err
    with pytest.raises(NupesError, match="state must be one of"):
        quantize_graph(import_tflite_bytes(chain_file(np.random.default_rng(1)), "c.tflite"), None, "uniform", 8,
                       state="sometimes")


def test_the_cli_writes_a_carry_model_and_a_tampered_state_is_refused(tmp_path, capsys):
    src = tmp_path / "chain.tflite"
    src.write_bytes(chain_file(np.random.default_rng(1)))
    out = tmp_path / "m.nq"
    assert cli_main(["quantize", str(src), "--method", "uniform", "--wbits", "8", "--state", "carry", "-o", str(out),
                     "--quiet", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["state"] == "carry"
    qm = artifact.load(str(out))
    assert qm.meta["state"] == "carry"
    reset = tmp_path / "r.nq"
    assert cli_main(["quantize", str(src), "--method", "uniform", "--wbits", "8", "-o", str(reset), "--quiet"]) == 0
    assert "state" not in artifact.load(str(reset)).meta and artifact.load(str(reset)).meta["hash"] != qm.meta["hash"]

    def edited(old: bytes, new: bytes) -> bytes:
        z = zipfile.ZipFile(io.BytesIO(out.read_bytes()))
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as w:
            for n in z.namelist():
                w.writestr(n, z.read(n).replace(old, new) if n == "manifest.json" else z.read(n))
        return artifact.reseal(buf.getvalue())

    with pytest.raises(NupesError, match="meta.state must be"):
        artifact.loads(edited(b'"state": "carry"', b'"state": "forever"'), "t.nq")
    with pytest.raises(NupesError, match="meta.state must be"):
        artifact.loads(edited(b'"state": "carry"', b'"state": 1'), "t.nq")


@pytest.mark.skipif(not HAVE_QEMU, reason="needs qemu-system-arm and arm-none-eabi-gcc (make setup installs them)")
@pytest.mark.parametrize("what", ["svdf_chain", "lstm"])
def test_carry_models_on_the_emulated_stm32(what, tmp_path):
    if what == "lstm":
        data = _lstm("three_units_clip_bites")[0]
    else:
        data = chain_file(np.random.default_rng(3))
    qm = quantize_graph(import_tflite_bytes(data, f"{what}.tflite"), None, "uniform", 8, name=what, state="carry")
    model = tmp_path / "m.nq"
    artifact.save(qm, str(model))
    fb, rep = api.run_emulated(str(model), "stm32", str(tmp_path / "out"), "random", 12, progress=False)
    assert rep.n == 12 and rep.mismatches == 0
    assert rep.original["what"] == "kept" and rep.original["mismatches"] == 0
    assert fb.sizes["state_bytes"] > 0
    # the oracle compared the sequence: the same inputs from the reset state each give other outputs
    x, _ = api.random_inputs(qm, 12)
    from nupes_edge.intref import quantize_input

    dev_in = to_device(quantize_input(x, qm.input_q.scale, qm.input_q.zero_point))
    assert (run_source(data, dev_in, qm.input_q, carry=True) != run_source(data, dev_in, qm.input_q)).any()


@pytest.mark.skipif(not HAVE_QEMU, reason="needs qemu-system-arm and arm-none-eabi-gcc (make setup installs them)")
def test_the_firmware_resets_on_request_and_answers_a_repeated_run_without_stepping(tmp_path):
    import struct
    import zlib

    from nupes_edge import flash, boards
    from nupes_edge.protocol import T_RUN, Client

    data = chain_file(np.random.default_rng(3))
    qm = quantize_graph(import_tflite_bytes(data, "chain.tflite"), None, "uniform", 8, name="chain", state="carry")
    model = tmp_path / "m.nq"
    artifact.save(qm, str(model))
    fb = api.build_board(str(model), "stm32", str(tmp_path / "out"))
    x = np.random.default_rng(4).integers(-128, 128, (6, 24)).astype(np.int8)
    want = run_tflm(data, x, carry=True).reshape(len(x), -1)
    with flash.start_qemu(boards.get("stm32"), fb.elf, max_seconds=600) as q, Client(q.url) as c:
        c.wait_banner()
        c.hello()
        for _ in range(2):  # the board's state after a first pass is not the reset state: RESET makes it so
            c.reset_state()
            got = [np.frombuffer(c.infer(r.tobytes())[1], np.int8) for r in x]
            np.testing.assert_array_equal(np.stack(got), want)
        again = c.request(T_RUN, struct.pack("<II", x.shape[1], zlib.crc32(x[-1].tobytes())))  # no LOAD before it
        assert np.array_equal(np.frombuffer(again[8:], np.int8), want[-1])
        stepped = run_tflm(data, np.concatenate([x, x[-1:]]), carry=True)[-1]  # what a second run would give
        assert not np.array_equal(stepped, want[-1])
        after = np.frombuffer(c.infer(x[0].tobytes())[1], np.int8)  # the next step: from the state after x[-1]
        np.testing.assert_array_equal(after, run_tflm(data, np.concatenate([x, x[:1]]), carry=True)[-1])


@pytest.mark.skipif(not os.path.isfile(DTLN), reason=f"{DTLN} is absent (the shared model zoo)")
def test_the_kept_dtln_carries_its_lstm_state_like_tflite_micro(tmp_path):
    """The DTLN noise suppressor processes one frame per call: its two LSTMs' state carried over 20 frames
    equals TFLite Micro invoked on them in order, and the host build the reference."""
    data = open(DTLN, "rb").read()
    g = import_tflite(DTLN)
    qm = quantize_graph(g, None, "uniform", 8, name="dtln", state="carry")
    reset_qm = quantize_graph(g, None, "uniform", 8, name="dtln")
    rng = np.random.default_rng(0)
    codes = rng.integers(-128, 128, (20, *g.input_shape)).astype(np.int8)
    dev_in = to_device(codes) if codes.ndim == 4 else codes.reshape(len(codes), -1)
    ref = run_int(qm, codes)
    ref_rows = to_device(ref) if ref.ndim == 4 else ref.reshape(len(ref), -1)
    want = run_source(data, dev_in, qm.input_q, carry=True)
    np.testing.assert_array_equal(ref_rows, want)
    reset_rows = run_int(reset_qm, codes).reshape(len(codes), -1)
    assert (reset_rows != ref_rows.reshape(len(codes), -1)).any(axis=1).sum() >= 10
    for dsp in (False, True):
        hb = build.build_host(qm, str(tmp_path / f"dsp{int(dsp)}"), sanitize=True, dsp=dsp)
        np.testing.assert_array_equal(build.run_host(hb.runner, dev_in), ref_rows)


def test_a_project_quantizes_with_its_state_key(tmp_path):
    """nupes-edge.toml's state = "carry" reaches quantize (and the cached model's key); an unknown value
    is refused by name; the codegen report and the build summary count the state's RAM."""
    from nupes_edge import codegen, project
    from nupes_edge.cli import _memory_text

    src = tmp_path / "chain.tflite"
    src.write_bytes(chain_file(np.random.default_rng(1)))
    keys = {}
    for state in ("reset", "carry"):
        d = tmp_path / state
        d.mkdir()
        (d / project.FILE).write_text(f"[project]\nmodel = \"{src}\"\ndata = \"random\"\nmethod = \"uniform\"\n"
                                      f"wbits = 8\nstate = \"{state}\"\n")
        proj = project.load(str(d))
        keys[state] = proj.cache_key()
        qm = artifact.load(project.quantized_model(proj, progress=False))
        assert qm.meta.get("state", "reset") == state
        rep = codegen.plan(qm).report
        assert ("state_bytes" in rep) == (state == "carry")
        assert ("state 572 B (carried)" in _memory_text(rep)) == (state == "carry")
    assert keys["reset"] != keys["carry"]
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / project.FILE).write_text(f"[project]\nmodel = \"{src}\"\ndata = \"random\"\nstate = \"forever\"\n")
    with pytest.raises(NupesError, match="state = 'forever'"):
        project.load(str(bad))
