"""Untrusted inputs and dangerous output paths (issue: hardening, round two).

A .pt2 whose archive marks a weight ``use_pickle`` (or hides a pickle elsewhere) must be refused
without running it; an output folder that is empty, the current folder or a parent must be refused
before anything is deleted."""
import json
import os
import pickle
import zipfile

import pytest
import torch
import torch.nn as nn

from nupes_edge.errors import NupesError
from nupes_edge.importers import import_pt2
from tests.test_cli import cli


class _Payload:
    """Unpickling this creates the marker file: proof that code ran."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _saved_net(tmp_path):
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8, 3)).eval()
    path = tmp_path / "net.pt2"
    torch.export.save(torch.export.export(net, (torch.randn(1, 1, 4, 4),)), str(path))
    return path


def _rewrite(src, dst, edit):
    """Copy the zip ``src`` to ``dst``, passing each (name, bytes) through ``edit``."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            name, data = edit(info.filename, zin.read(info.filename))
            zout.writestr(name, data)


def _pickled_weight_archive(tmp_path, marker):
    src = _saved_net(tmp_path)
    target = {}

    def edit(name, data):
        if name.endswith("weights_config.json"):
            cfg = json.loads(data)
            fqn, meta = next(iter(cfg["config"].items()))
            meta["use_pickle"] = True
            target["file"] = meta["path_name"]
            return name, json.dumps(cfg)
        return name, data

    mid = tmp_path / "mid.pt2"
    _rewrite(src, mid, edit)
    bad = tmp_path / "evil.pt2"
    _rewrite(mid, bad, lambda n, d: (n, pickle.dumps(_Payload(str(marker))) if n.endswith("/" + target["file"]) else d))
    return bad


def test_a_pt2_with_a_pickled_weight_is_refused_and_runs_nothing(tmp_path):
    marker = tmp_path / "PWNED"
    bad = _pickled_weight_archive(tmp_path, marker)
    with pytest.raises(NupesError, match="pickle"):
        import_pt2(str(bad))
    assert not marker.exists()
    r = cli("quantize", str(bad), "--data", "random", "-o", str(tmp_path / "m.nq"), cwd=tmp_path)
    assert r.returncode == 2 and "pickle" in r.stderr and "Traceback" not in r.stderr
    assert not marker.exists() and not (tmp_path / "m.nq").exists()


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_torch_loaders_are_guarded_even_past_the_inspection(tmp_path):
    """Defence in depth: with the archive inspection skipped, the load itself still refuses the pickle."""
    from nupes_edge.importers import pt2_safe

    marker = tmp_path / "PWNED"
    bad = _pickled_weight_archive(tmp_path, marker)
    with pytest.raises(Exception):
        with pt2_safe._no_unpickling():
            torch.export.load(str(bad))
    assert not marker.exists()
    assert torch.load is not None and pickle.loads(pickle.dumps(3)) == 3  # restored afterwards


def test_a_plain_pt2_still_loads(tmp_path):
    g = import_pt2(str(_saved_net(tmp_path)))
    assert [n.op for n in g.nodes] == ["conv2d", "flatten", "linear"]


@pytest.fixture(scope="module")
def digits_nq(tmp_path_factory):
    """A small model.nq, made once for the tests that only need one."""
    d = tmp_path_factory.mktemp("nq")
    assert cli("quantize", "digits", "--data", "digits", "--method", "uniform", "-o", "m.nq", "--quiet",
               cwd=d).returncode == 0
    return (d / "m.nq").read_bytes()


@pytest.mark.parametrize("out", ["", ".", "./", "..", "sub/.."])
def test_codegen_refuses_the_current_folder_or_a_parent_and_deletes_nothing(tmp_path, out, digits_nq):
    work = tmp_path / "work"
    (work / "sub").mkdir(parents=True)
    (work / "keep.txt").write_text("mine")
    (work / "m.nq").write_bytes(digits_nq)
    r = cli("codegen", "m.nq", "-o", out, cwd=work)
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr and "folder" in r.stderr
    assert (work / "keep.txt").read_text() == "mine" and (work / "m.nq").exists() and (work / "sub").is_dir()


def test_codegen_refuses_a_symlinked_output_folder(tmp_path, digits_nq):
    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "keep.txt").write_text("mine")
    os.symlink(tmp_path / "real", tmp_path / "link")
    (tmp_path / "m.nq").write_bytes(digits_nq)
    r = cli("codegen", "m.nq", "-o", "link", cwd=tmp_path)
    assert r.returncode == 2 and "symlink" in r.stderr
    assert (tmp_path / "real" / "keep.txt").read_text() == "mine"


@pytest.mark.parametrize("args,needle", [
    (["quantize", "digits", "--data", "digits", "--seed", "-1", "-o", "x.nq"], "--seed"),
    (["quantize", "digits", "--data", "digits", "--flash-budget", "9" * 400, "-o", "x.nq"], "--flash-budget"),
    (["verify", "m.nq", "--port", "socket://127.0.0.1:1", "--timeout", "inf"], "--timeout"),
    (["verify", "m.nq", "--board", "host", "--data", "random", "-n", "2000000"], "-n"),
    (["run", "m.nq", "--board", "host", "-n", "nan"], "-n"),
])
def test_numeric_options_are_bounded(tmp_path, args, needle):
    r = cli(*args, cwd=tmp_path)
    assert r.returncode == 2 and needle in r.stderr and "Traceback" not in r.stderr


def test_untrusted_text_reaches_the_terminal_escaped():
    from nupes_edge.cli import safe_text

    assert safe_text("model\x1b]0;pwned\x07\x1b[2J\x9b1m\nnext") == "model\\x1b]0;pwned\\x07\\x1b[2J\\x9b1m\nnext"


def test_openocd_never_reads_a_path_as_tcl(tmp_path, monkeypatch):
    from nupes_edge import boards, flash

    monkeypatch.setattr(flash.shutil, "which", lambda name: "/bin/true" if name == "openocd" else None)
    with pytest.raises(NupesError, match="Tcl"):
        flash.flash_probe(boards.get("nucleo-f446re"), "a[exec touch PWN]/fw.elf", "fw.bin", "openocd")
    assert not (tmp_path / "PWN").exists()


def test_build_never_writes_through_a_symlink(tmp_path, digits_nq):
    (tmp_path / "m.nq").write_bytes(digits_nq)
    victim = tmp_path / "victim.c"
    victim.write_text("precious")
    rt = tmp_path / "out" / "src" / "runtime"
    rt.mkdir(parents=True)
    os.symlink(victim, rt / "nupes_add.c")
    assert cli("build", "m.nq", "--board", "host", "-o", "out", cwd=tmp_path).returncode == 0
    assert victim.read_text() == "precious" and not (rt / "nupes_add.c").is_symlink()
    # a symlinked runtime folder is refused
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    import shutil as sh
    sh.rmtree(rt)
    os.symlink(elsewhere, rt)
    r = cli("build", "m.nq", "--board", "host", "-o", "out", cwd=tmp_path)
    assert r.returncode == 2 and "symlink" in r.stderr and not os.listdir(elsewhere)


def test_one_array_named_by_every_reference_cannot_blow_up_memory(tmp_path, digits_nq):
    """An .nq whose references all name one 64 MB array: refused by the running total before it
    is materialised dozens of times."""
    import io

    import numpy as np

    from nupes_edge import artifact

    (tmp_path / "m.nq").write_bytes(digits_nq)
    src = zipfile.ZipFile(tmp_path / "m.nq")
    manifest = json.loads(src.read("manifest.json"))

    def point_all(o):
        if isinstance(o, dict):
            return {"array": "big"} if set(o) == {"array"} else {k: point_all(v) for k, v in o.items()}
        if isinstance(o, list):
            return [point_all(v) for v in o]
        return o

    manifest = point_all(manifest)
    for node in manifest["graph"]["nodes"]:
        for key in ("weight", "bias"):
            if key in node:
                node[key] = "big"
    manifest["arrays"] = {}
    buf = io.BytesIO()
    np.save(buf, np.zeros(64 << 20, np.uint8))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        z.writestr("manifest.json", json.dumps(manifest))
        z.writestr("arrays/big.npy", buf.getvalue())
    (tmp_path / "bomb.nq").write_bytes(artifact.reseal(out.getvalue()))
    with pytest.raises(NupesError, match="array references add up"):
        artifact.load(str(tmp_path / "bomb.nq"))
