"""Builds in one folder at the same time, interrupted builds, codegen folders: one build per
folder at a time, and an output folder is whole or untouched, never half-written."""
import json
import os
import subprocess
import sys

import pytest

from nupes_edge import api, artifact
from nupes_edge.errors import NupesError
from nupes_edge.locking import fresh_folder
from nupes_edge.quant.driver import quantize_graph
from tests.test_cli import ENV


@pytest.fixture(scope="module")
def model_file(tmp_path_factory, digits_graph, digits_calib):
    path = tmp_path_factory.mktemp("m") / "digits.nq"
    artifact.save(quantize_graph(digits_graph, digits_calib, "uniform", 8, name="digits"), str(path))
    return path


def test_concurrent_firmware_builds_in_one_folder_all_succeed(model_file, tmp_path):
    cmd = [sys.executable, "-m", "nupes_edge", "build", str(model_file), "--board", "stm32", "--json"]
    for _ in range(3):
        procs = [subprocess.Popen(cmd, cwd=tmp_path, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for _ in range(2)]
        outs = [p.communicate(timeout=300) for p in procs]
        assert [p.returncode for p in procs] == [0, 0], [o[1][-400:] for o in outs]
    out = tmp_path / "build" / "stm32"
    assert (out / "firmware.elf").stat().st_size > 0 and (out / "firmware.bin").stat().st_size > 0
    assert json.loads(outs[0][0])["model"] == str(out / "model.nq") or json.loads(outs[0][0])["model"].endswith("model.nq")
    assert (out / "model.nq").read_bytes() == model_file.read_bytes()  # the model beside its firmware
    assert not [f for f in os.listdir(tmp_path / "build") if ".tmp-" in f or ".old-" in f]


def test_a_failed_or_interrupted_write_leaves_the_folder_as_it_was(tmp_path):
    folder = tmp_path / "out"
    folder.mkdir()
    (folder / "keep.txt").write_text("old")
    for exc in (RuntimeError("compiler failed"), KeyboardInterrupt()):
        with pytest.raises(type(exc)):
            with fresh_folder(str(folder)) as work:
                open(os.path.join(work, "half.c"), "w").write("int x")
                raise exc
        assert os.listdir(folder) == ["keep.txt"] and os.listdir(tmp_path) == ["out"]
    with fresh_folder(str(folder)) as work:
        open(os.path.join(work, "new.c"), "w").write("int y;")
    assert os.listdir(folder) == ["new.c"] and os.listdir(tmp_path) == ["out"]


def test_a_killed_builds_temporary_folder_is_cleaned_up_by_the_next(tmp_path):
    """SIGKILL skips every handler: its .out.tmp-* folder stays. The next write of the same folder
    (under its lock, so no other writer is alive) removes it; other folders' are left alone."""
    folder = tmp_path / "out"
    for stale in (".out.tmp-abc123", ".out.old-def456"):
        (tmp_path / stale).mkdir()
        (tmp_path / stale / "half.c").write_text("int x")
    (tmp_path / ".other.tmp-zzz").mkdir()
    with fresh_folder(str(folder)) as work:
        open(os.path.join(work, "new.c"), "w").write("int y;")
    assert sorted(os.listdir(tmp_path)) == [".other.tmp-zzz", "out"]


def test_codegen_writes_a_whole_folder_and_never_replaces_foreign_files(model_file, tmp_path):
    gen = api.codegen(str(model_file), str(tmp_path / "lib"))
    assert sorted(os.listdir(tmp_path / "lib")) == sorted({f.split("/")[0] for f in gen.files})
    api.codegen(str(model_file), str(tmp_path / "lib"))  # its own previous output: replaced
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "main.c").write_text("int main(void) { return 0; }")
    with pytest.raises(NupesError, match="holds other files"):
        api.codegen(str(model_file), str(tmp_path / "mine"))
    assert os.listdir(tmp_path / "mine") == ["main.c"]
