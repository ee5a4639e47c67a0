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
