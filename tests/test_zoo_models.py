"""Public microcontroller models as users bring them (../shared/models/zoo and mlperf-tiny, read from
../shared; CI has it): every int8 file whose operators nupes-edge maps is kept with no data and then
computes exactly what TFLite Micro computes on the file, in the integer reference and in the host
build; four of them (two with LSTMs) also on the emulated STM32. The files that stay out
(signal-processing CUSTOM operators, int16 activations) are refused with every reason named at once."""
import os
import shutil

import numpy as np
import pytest

from nupes_edge import api, artifact, build
from nupes_edge.errors import NupesError
from nupes_edge.importers import import_tflite
from nupes_edge.intref import run_int
from nupes_edge.layout import to_device
from nupes_edge.oracle import run_source
from nupes_edge.quant.driver import quantize_graph

SHARED = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "shared", "models"))
KEPT = ["zoo/mlc_ad01_int8.tflite", "zoo/mlc_resnet_large_int8.tflite", "zoo/mlc_str_ww_ref_model.tflite",
        "zoo/tflm_hello_world_int8.tflite", "zoo/tflm_micro_speech_int8.tflite", "zoo/tflm_model_runner_codegen.tflite",
        "zoo/tflm_mnist_lstm_int8.tflite", "zoo/tflm_dtln_noise_suppression.tflite",
        "mlperf-tiny/kws_ref_model.tflite", "mlperf-tiny/pretrainedResnet_quant.tflite"]
REFUSED = {"zoo/tflm_audio_preprocessor_int8.tflite": ["CUSTOM SignalWindow", "CUSTOM SignalRfft", "CAST of activations",
                                                      "INT16"],
           # its SVDFs are mapped (int8 state): only the int16 activations around them are named
           "zoo/tflm_keyword_scrambled_8bit.tflite": ["not supported: INT16/INT32 activations (16x8 models"],
           "zoo/tflm_seanet_transpose_conv4.tflite": ["not supported: INT16/INT32 activations (16x8 models"]}
# operators a refused file has that are mapped (never named as a problem)
MAPPED_HERE = {"zoo/tflm_keyword_scrambled_8bit.tflite": ["SVDF"],
               "zoo/tflm_seanet_transpose_conv4.tflite": ["TRANSPOSE_CONV"]}
HAVE_QEMU = shutil.which("qemu-system-arm") is not None and shutil.which("arm-none-eabi-gcc") is not None


def shared(rel: str) -> str:
    path = os.path.join(SHARED, rel)
    if not os.path.isfile(path):
        pytest.skip(f"public model absent: {path} (CI provides ../shared/models)")
    return path


@pytest.mark.parametrize("rel", KEPT)
def test_kept_file_equals_tflite_micro_on_reference_and_host_build(rel, tmp_path):
    path = shared(rel)
    g = import_tflite(path)
    qm = quantize_graph(g, None, "uniform", 8, name="zoo")
    assert qm.meta["kept_from_file"]["weights"].startswith("int8 weights")
    xq = np.random.default_rng(1).integers(-128, 128, (20, *g.input_shape)).astype(np.int8)
    ref = run_int(qm, xq)
    ref_rows = to_device(ref) if ref.ndim == 4 else ref.reshape(len(ref), -1)
    want = run_source(open(path, "rb").read(), to_device(xq), qm.input_q)
    got = ref_rows
    if want.dtype != np.int8:  # the file ends in DEQUANTIZE
        got = np.float32(qm.output_q.scale) * (ref_rows.astype(np.float32) - np.float32(qm.output_q.zero_point))
    np.testing.assert_array_equal(got, want)
    hb = build.build_host(qm, str(tmp_path))
    np.testing.assert_array_equal(build.run_host(hb.runner, to_device(xq)), ref_rows)


@pytest.mark.parametrize("rel", sorted(REFUSED))
def test_files_out_of_scope_are_refused_naming_everything(rel):
    with pytest.raises(NupesError) as e:
        import_tflite(shared(rel))
    for needle in REFUSED[rel]:
        assert needle in str(e.value)
    named = str(e.value).split(". nupes-edge maps ")[0]  # the problems, without the list of what is mapped
    for op in MAPPED_HERE.get(rel, []):
        assert op not in named


@pytest.mark.skipif(not HAVE_QEMU, reason="needs qemu-system-arm and arm-none-eabi-gcc (make setup installs them)")
@pytest.mark.parametrize("rel", ["zoo/tflm_micro_speech_int8.tflite", "zoo/mlc_str_ww_ref_model.tflite",
                                 "zoo/tflm_mnist_lstm_int8.tflite", "zoo/tflm_dtln_noise_suppression.tflite"])
def test_kept_file_runs_on_the_emulated_stm32_equal_to_the_file(rel, tmp_path):
    qm = quantize_graph(import_tflite(shared(rel)), None, "uniform", 8, name="zoo")
    model = tmp_path / "m.nq"
    artifact.save(qm, str(model))
    _, rep = api.run_emulated(str(model), "stm32", str(tmp_path / "out"), "random", 10, progress=False)
    assert rep.n == 10 and rep.mismatches == 0
    assert rep.original["what"] == "kept" and rep.original["mismatches"] == 0


@pytest.mark.skipif(not HAVE_QEMU, reason="needs qemu-system-arm and arm-none-eabi-gcc (make setup installs them)")
@pytest.mark.parametrize("board", ["stm32f205", "mps2-an500", "mps2-an505", "mps3-an547"])
def test_kept_mlperf_kws_is_exact_on_every_core_it_fits(board, tmp_path):
    """MLPerf Tiny's own int8 KWS file, kept, on the M3 (portable kernels), M7, M33 and M55 (DSP):
    bit-exact with the reference and equal to TFLite Micro on the file (it does not fit the M0)."""
    qm = quantize_graph(import_tflite(shared("mlperf-tiny/kws_ref_model.tflite")), None, "uniform", 8, name="kws")
    model = tmp_path / "kws.nq"
    artifact.save(qm, str(model))
    _, rep = api.run_emulated(str(model), board, str(tmp_path / "out"), "random", 3, progress=False)
    assert rep.n == 3 and rep.mismatches == 0 and rep.original["mismatches"] == 0
