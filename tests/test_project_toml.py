"""nupes-edge.toml is checked against its schema: misspelled keys are errors with a suggestion,
every quantize option can be set there, and the file is found from a subfolder."""
import json

import pytest

from nupes_edge import artifact, project
from nupes_edge.errors import NupesError
from tests.test_cli import cli


def write(tmp_path, body: str):
    (tmp_path / project.FILE).write_text("[project]\nmodel = \"digits\"\ndata = \"digits\"\n" + body)
    return tmp_path


@pytest.mark.parametrize("body,needle", [
    ("wbit = 2\n", "unknown key 'wbit' in [project]; did you mean 'wbits'?"),
    ("methd = \"uniform\"\n", "did you mean 'method'?"),
    ("method = \"unifrom\"\n", "did you mean 'uniform'?"),
    ("wbits = \"4\"\n", "wbits = '4': expected weight bits"),
    ("wbits = 9\n", "wbits must be 2..8"),
    ("seed = -1\n", "seed must be"),
    ("keep_softmax = 1\n", "expected true or false"),
    ("layer_wbits = { conv2d = 12 }\n", "layer_wbits.conv2d = 12"),
    ("[board]\nname = \"x\"\n", "unknown table or key 'board'"),
    ("levels = \"int4\"\n", "levels = 'int4': expected \"int16\" or \"int8\""),
])
def test_bad_toml_is_refused_naming_the_key(tmp_path, body, needle):
    write(tmp_path, body)
    with pytest.raises(NupesError) as e:
        project.load(str(tmp_path))
    assert needle in str(e.value)


def test_a_misspelled_key_stops_the_command_line_with_exit_2(tmp_path):
    write(tmp_path, "wbit = 2\n")
    r = cli("build", "--board", "host", cwd=tmp_path)
    assert r.returncode == 2 and "did you mean 'wbits'?" in r.stderr and "Traceback" not in r.stderr


def test_every_quantize_option_can_be_set_and_the_file_is_found_from_a_subfolder(tmp_path):
    write(tmp_path, "method = \"uniform\"\nwbits = 4\nflash_budget = \"6K\"\nlayer_wbits = { conv2d = 8 }\n"
                    "keep_softmax = false\nrecalibrate = false\n")
    (tmp_path / "src" / "deep").mkdir(parents=True)
    r = cli("eval", "--json", cwd=tmp_path / "src" / "deep")  # the project two folders up
    assert r.returncode == 0, r.stderr

    proj = project.load(str(tmp_path))
    qm = artifact.load(proj.cached_model_path())
    assert qm.meta["flash_budget"]["budget_bytes"] == 6 * 1024
    assert qm.params["conv2d"].bits == 8  # pinned by layer_wbits
    assert json.loads(r.stdout)["n"] > 0


def test_a_helium_board_quantizes_with_int8_levels(tmp_path):
    """A project for the Cortex-M55 quantizes with int8 levels unless it says otherwise; the levels are
    part of the cached model's key; an M4 project keeps int16 levels. The M55 build notes the
    convolutions that int16 levels keep off Helium."""
    from nupes_edge.codegen.plan import int16_level_convs

    keys = {}
    for board, levels, want in [("mps3-an547", "", 8), ("stm32", "", 16), ("mps3-an547", "levels = \"int16\"\n", 16),
                                ("stm32", "levels = \"int8\"\n", 8)]:
        d = tmp_path / f"{board}{len(levels)}"
        d.mkdir()
        write(d, f"method = \"powerquant\"\nboard = \"{board}\"\n" + levels)
        proj = project.load(str(d))
        assert proj.level_bits() == want
        keys[(board, want)] = proj.cache_key()
        if board == "mps3-an547":
            qm = artifact.load(project.quantized_model(proj, progress=False))
            assert qm.meta.get("levels", 16) == want
            assert (int16_level_convs(qm) == []) == (want == 8)
    assert keys[("mps3-an547", 8)] != keys[("mps3-an547", 16)] and keys[("stm32", 16)] != keys[("stm32", 8)]


def test_init_for_a_users_own_models(tmp_path):
    """init --model: an int8 .tflite with no data (its quantization kept, verified on random inputs
    against the file under TFLite Micro), and a .pt2 with its calibration .npz; paths are stored
    relative to the project, so the folder can move."""
    import numpy as np
    import torch

    from tests.test_tflite_ops_tflm import mul_silu_and_squeeze_excite

    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "net.tflite").write_bytes(mul_silu_and_squeeze_excite())
    r = cli("init", "p1", "--model", "models/net.tflite", "--board", "host", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    toml = (tmp_path / "p1" / project.FILE).read_text()
    assert 'model = "../models/net.tflite"' in toml and 'data = "random"' in toml and 'method = "uniform"' in toml
    r = cli("verify", "--board", "host", "-n", "20", "--json", cwd=tmp_path / "p1")
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    assert rep["mismatches"] == 0 and rep["original"]["mismatches"] == 0 and rep["original"]["what"] == "kept"

    torch.set_num_threads(1)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(64, 3)).eval()
    torch.export.save(torch.export.export(net, (torch.randn(1, 1, 6, 6),)), str(tmp_path / "models" / "net.pt2"))
    np.savez(tmp_path / "models" / "calib.npz", x=np.random.default_rng(0).normal(size=(32, 1, 6, 6)).astype(np.float32))
    r = cli("init", "p2", "--model", "models/net.pt2", cwd=tmp_path)
    assert r.returncode == 2 and "needs calibration data: add --data" in r.stderr
    r = cli("init", "p2", "--model", "models/net.pt2", "--data", "models/calib.npz", "--method", "uniform",
            "--board", "host", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    r = cli("verify", "--board", "host", "-n", "8", "--json", cwd=tmp_path / "p2")
    assert r.returncode == 0 and json.loads(r.stdout)["mismatches"] == 0, r.stderr


def test_a_projects_first_build_reuses_the_model_demo_made(tmp_path):
    """`nupes-edge demo` shares each model it quantizes; a project of the same example, method and
    bits then builds without quantizing (the same bytes: a model.nq is a pure function of its inputs)."""
    r = cli("demo", "--example", "digits", "--methods", "uniform", "--board", "none", "--out", "d", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert cli("init", "proj", "--example", "digits", "--method", "uniform", "--board", "host", cwd=tmp_path).returncode == 0
    r = cli("build", "--board", "host", cwd=tmp_path / "proj")
    assert r.returncode == 0 and "quantizing" not in r.stderr and "calibrating" not in r.stderr, r.stderr
    cached = next((tmp_path / "proj" / ".nupes-edge" / "cache").iterdir())
    assert cached.read_bytes() == (tmp_path / "d" / "digits-uniform-w4.nq").read_bytes()
