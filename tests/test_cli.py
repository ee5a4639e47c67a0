"""The command line as a user runs it: real processes, exit codes, JSON on stdout."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "nupes_edge", *args], capture_output=True, text=True, env=ENV, cwd=cwd)


def test_quantize_then_eval_json(tmp_path):
    out = tmp_path / "m.nq"
    r = cli("quantize", "digits", "--data", "digits", "--method", "powerquant", "--wbits", "4", "-o", str(out), "--json")
    assert r.returncode == 0, r.stderr
    q = json.loads(r.stdout)
    assert q["method"] == "powerquant" and len(q["hash"]) == 64 and out.exists()
    r = cli("eval", str(out), "--data", "digits", "--json")
    assert r.returncode == 0, r.stderr
    e = json.loads(r.stdout)
    assert set(e) >= {"float_top1", "fakequant_top1", "int_top1", "agreement", "sqnr_db"}
    assert 0.9 <= e["int_top1"] <= 1 and 0.9 <= e["agreement"] <= 1 and e["sqnr_db"] > 5


def test_quantize_with_int8_levels(tmp_path):
    """--levels int8: the tables of the convolutions Helium multiplies (digits: the first layer's
    window kernel, the two im2col ones) hold int8 values times a power of two; the depthwise and dense
    layers keep int16 levels (their kernels run the same loop either way); the choice is in the JSON
    and the model.nq, and the model still evaluates."""
    from nupes_edge import artifact
    from nupes_edge.codegen.plan import helium_levels

    out = tmp_path / "m.nq"
    r = cli("quantize", "digits", "--data", "digits", "--method", "powerquant", "--levels", "int8", "-o", str(out), "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["levels"] == 8
    qm = artifact.load(str(out))
    assert qm.meta["levels"] == 8
    int8 = {n for n, p in qm.params.items() if hasattr(p, "lut") and helium_levels(p.lut, p.bits)}
    assert int8 == {"conv2d", "conv2d_2", "conv2d_3"}, int8
    for n in int8:
        p = qm.params[n]
        lut = np.asarray(p.lut, np.int64)
        step = 1 << max(int(p.G) - 4, 0)  # W4: int8 levels up to 7 * 2^4 = 112, times 2^(G - 4)
        assert lut[-1] > 127 and np.all(lut % step == 0) and (lut // step).max() <= 127
    e = json.loads(cli("eval", str(out), "--data", "digits", "--json").stdout)
    assert e["int_top1"] > 0.9
    r = cli("quantize", "digits", "--data", "digits", "--levels", "int4", "-o", str(out))
    assert r.returncode == 2 and "int4" in r.stderr


def test_eval_on_a_user_npz(tmp_path):
    from nupes_edge import examples

    x, y = examples.load("digits", "test")
    data = tmp_path / "d.npz"
    np.savez(data, x=x[:40], y=y[:40])
    out = tmp_path / "m.nq"
    assert cli("quantize", "digits", "--data", str(data), "--method", "uniform", "-o", str(out), "--quiet").returncode == 0
    e = json.loads(cli("eval", str(out), "--data", str(data), "--json").stdout)
    assert e["n"] == 40


@pytest.mark.parametrize("args,needle", [
    (["quantize", "nosuchmodel", "--data", "digits", "-o", "x.nq"], "nosuchmodel: no such file"),
    (["quantize", "digits", "--data", "nosuch.npz", "-o", "x.nq"], "nosuch.npz"),
    (["quantize", "digits", "--data", "mnist5k", "-o", "x.nq"], "model takes"),
    (["quantize", "digits", "--data", "digits", "--layer-wbits", "zz=4", "-o", "x.nq"], "no weight layer named 'zz'"),
    (["quantize", "digits", "--data", "digits", "--wbits", "9", "-o", "x.nq"], "2..8"),
    (["eval", "missing.nq", "--data", "digits"], "missing.nq: no such file"),
])
def test_user_mistakes_exit_2_with_a_message_and_write_nothing(tmp_path, args, needle):
    r = cli(*args, cwd=tmp_path)
    assert r.returncode == 2
    assert needle in r.stderr
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "x.nq").exists()


def test_unsupported_op_in_a_pt2_file(tmp_path):
    import torch
    import torch.nn as nn

    ep = torch.export.export(nn.Sequential(nn.Conv2d(1, 2, 3), nn.GELU()).eval(), (torch.randn(1, 1, 8, 8),))
    torch.export.save(ep, str(tmp_path / "gelu.pt2"))
    data = tmp_path / "d.npz"
    np.savez(data, x=np.zeros((4, 1, 8, 8), np.float32), y=np.zeros(4, np.int64))
    r = cli("quantize", "gelu.pt2", "--data", str(data), "-o", "x.nq", cwd=tmp_path)
    assert r.returncode == 2 and "aten.gelu" in r.stderr and "gelu.pt2" in r.stderr
    assert not (tmp_path / "x.nq").exists()


def test_export_tflite_writes_a_file_litert_loads(tmp_path):
    out = tmp_path / "m.nq"
    assert cli("quantize", "digits", "--data", "digits", "--method", "uniform", "--wbits", "8", "-o", str(out), "--quiet").returncode == 0
    for fmt in ("int8", "float"):
        r = cli("export-tflite", str(out), "-o", str(tmp_path / f"m-{fmt}.tflite"), "--format", fmt, "--json")
        assert r.returncode == 0, r.stderr
        data = (tmp_path / f"m-{fmt}.tflite").read_bytes()
        assert data[4:8] == b"TFL3" and json.loads(r.stdout)["bytes"] == len(data)
    r = cli("export-tflite", str(tmp_path / "missing.nq"), "-o", str(tmp_path / "x.tflite"))
    assert r.returncode == 2 and not (tmp_path / "x.tflite").exists()


def test_version_and_init_validation(tmp_path):
    from nupes_edge import __version__

    r = cli("--version")
    assert r.returncode == 0 and r.stdout.strip() == f"nupes-edge {__version__}"
    r = cli("init", str(tmp_path / "p"), "--board", "nonesuch")
    assert r.returncode == 2 and "nonesuch" in r.stderr and not (tmp_path / "p").exists()
    r = cli("init", str(tmp_path / "p"), "--board", "nucleo-f446re")
    assert r.returncode == 0 and (tmp_path / "p" / "nupes-edge.toml").exists()


def test_project_commands_use_the_projects_model_and_test_data(tmp_path):
    import numpy as np

    from nupes_edge import examples

    proj = tmp_path / "p"
    assert cli("init", str(proj), "--example", "digits", "--method", "uniform", "--wbits", "8").returncode == 0
    x, y = examples.load("digits", "calib")
    np.savez(proj / "calib.npz", x=x, y=y)
    xt, yt = examples.load("digits", "test")
    np.savez(proj / "held_out.npz", x=xt[:40], y=yt[:40])
    toml = (proj / "nupes-edge.toml").read_text().replace('data = "digits"', 'data = "calib.npz"')
    (proj / "nupes-edge.toml").write_text(toml)
    r = cli("verify", "--board", "host", "-n", "10", "--json", cwd=proj)  # no test data: says it uses calib
    assert r.returncode == 0, r.stderr
    assert "calibration data" in r.stderr and json.loads(r.stdout)["n"] == 10
    (proj / "nupes-edge.toml").write_text(toml.replace("[project]\n", '[project]\ntest = "held_out.npz"\n'))
    r = cli("eval", "--json", cwd=proj)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["n"] == 40 and "calibration data" not in r.stderr
    assert cli("codegen", "-o", "lib", cwd=proj).returncode == 0 and (proj / "lib" / "nupes_model_digits.h").exists()
    assert cli("export-tflite", "-o", "m.tflite", cwd=proj).returncode == 0 and (proj / "m.tflite").exists()
    r = cli("verify", "--board", "host", "--json", cwd=proj)
    assert r.returncode == 0 and json.loads(r.stdout)["n"] == 40


def test_tflm_lut_export_prints_no_stray_warning(tmp_path):
    out = tmp_path / "m.nq"
    assert cli("quantize", "digits", "--data", "digits", "--method", "powerquant", "--wbits", "4", "-o", str(out),
               "--quiet").returncode == 0
    r = cli("export-tflite", str(out), "-o", str(tmp_path / "m.tflite"), "--format", "tflm-lut")
    assert r.returncode == 0 and "warning" not in r.stderr.lower(), r.stderr


def test_quantize_explains_its_per_layer_columns_and_every_option_has_help(tmp_path):
    r = cli("quantize", "digits", "--data", "digits", "--method", "uniform", "--wbits", "8", "-o", str(tmp_path / "m.nq"),
            "--quiet")
    assert r.returncode == 0 and "power exponent a" in r.stdout and "table shift G" in r.stdout
    from nupes_edge.cli import build_parser

    parser = build_parser()
    subs = next(a for a in parser._actions if a.dest == "command").choices
    for name, sub in subs.items():
        for action in sub._actions:
            if action.dest != "help":
                assert action.help, f"{name} {action.option_strings or action.dest} has no help"


def test_a_relative_calibration_path_is_found_from_another_folder(tmp_path):
    """quantize records the calibration file by its absolute path: verify without --data, run
    from another folder, still finds it."""
    from nupes_edge import examples

    x, y = examples.load("digits", "test")
    (tmp_path / "work").mkdir()
    np.savez(tmp_path / "work" / "d.npz", x=x[:30], y=y[:30])
    r = cli("quantize", "digits", "--data", "d.npz", "--method", "uniform", "-o", "m.nq", "--quiet",
            cwd=tmp_path / "work")
    assert r.returncode == 0, r.stderr
    r = cli("verify", str(tmp_path / "work" / "m.nq"), "--board", "host", "-n", "30", "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["n"] == 30


def test_data_without_labels_gives_error_metrics_and_no_top1(tmp_path):
    """An .npz with x only (an autoencoder's or a regression model's data): quantize, eval and verify
    all work, report max |err|, RMSE, MAE, cosine and SQNR against the float model, and no top-1.
    float64 x is taken as the API takes it."""
    from nupes_edge import examples

    x, _ = examples.load("digits", "test")
    np.savez(tmp_path / "x.npz", x=x[:40].astype(np.float64))
    assert cli("quantize", "digits", "--data", "x.npz", "--method", "uniform", "-o", "m.nq", "--quiet",
               cwd=tmp_path).returncode == 0
    e = cli("eval", "m.nq", "--data", "x.npz", "--json", cwd=tmp_path)
    assert e.returncode == 0, e.stderr
    d = json.loads(e.stdout)
    assert d["int_top1"] is None and d["float_top1"] is None
    m = d["metrics"]
    assert set(m) == {"max_abs", "rmse", "mae", "cosine", "sqnr_db"} and 0.9 < m["cosine"] <= 1 and m["rmse"] > 0
    v = cli("verify", "m.nq", "--board", "host", "--data", "x.npz", cwd=tmp_path)
    assert v.returncode == 0 and "no labels" in v.stdout and "cosine" in v.stdout, v.stdout + v.stderr


def test_a_missing_file_is_reported_before_anything_heavy_loads(tmp_path):
    import time

    for args in (["quantize", "digits", "--data", "nosuch.npz", "-o", "x.nq"], ["quantize", "nosuch.pt2", "--data",
                                                                                "digits", "-o", "x.nq"]):
        t0 = time.monotonic()
        r = cli(*args, cwd=tmp_path)
        assert r.returncode == 2 and "nosuch" in r.stderr and time.monotonic() - t0 < 2.0, r.stderr


def test_analyze_keeps_the_projects_report_and_shows_a_model_that_does_not_fit(tmp_path):
    assert cli("init", "--example", "digits", "--method", "uniform", "--wbits", "8", "proj", cwd=tmp_path).returncode == 0
    proj = tmp_path / "proj"
    report = proj / "build" / "stm32" / "report.html"
    assert cli("build", "--board", "stm32", cwd=proj).returncode == 0 and report.exists()
    assert cli("analyze", "--board", "stm32", cwd=proj).returncode == 0
    assert report.exists()  # analyze built aside
    # two 36 KB tensors alive together (a residual over a convolution: neither written over the other,
    # nor tiled) on the M0's 16 KiB of RAM (mnist5k fits there since its least-RAM plan tiles)
    import torch
    import torch.nn as nn

    class Wide(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Conv2d(3, 16, 3, padding=1), nn.Conv2d(16, 16, 3, padding=1)
            self.fc = nn.Linear(16, 10)

        def forward(self, x):
            y = torch.relu(self.a(x))
            return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(y + self.b(y), 1), 1))

    torch.manual_seed(0)
    torch.export.save(torch.export.export(Wide().eval(), (torch.randn(1, 3, 48, 48),)), str(tmp_path / "wide.pt2"))
    np.savez(tmp_path / "w.npz", x=np.random.default_rng(0).standard_normal((8, 3, 48, 48)).astype(np.float32))
    assert cli("quantize", "wide.pt2", "--data", "w.npz", "--method", "uniform", "--wbits", "8", "-o", "m.nq",
               "--quiet", cwd=tmp_path).returncode == 0
    r = cli("analyze", "m.nq", "--board", "microbit", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "does not fit microbit" in r.stdout and "RAM overflowed" in r.stdout and "conv2d" in r.stdout
