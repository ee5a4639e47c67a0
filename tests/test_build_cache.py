"""Host builds reuse compiled runtime objects (nupes_edge/build.py): a second build of another model
compiles no runtime source, a change of flags or of a runtime source compiles afresh, and an
unwritable cache falls back to compiling everything. The result is the same runner either way."""
import os

import numpy as np

from nupes_edge import build
from nupes_edge.build import build_host, run_host
from nupes_edge.ir import Graph, infer_shapes
from nupes_edge.layout import from_device
from nupes_edge.quant.driver import quantize_graph
from nupes_edge.verify import reference_io
from tests.test_kernels import conv_node


def _model(seed):
    rng = np.random.default_rng(seed)
    node = conv_node(rng, 8, 6, (3, 3), (1, 1), [1, 1, 1, 1], False, "relu")
    g = Graph("x", (8, 5, 5), node.output, [node])
    infer_shapes(g)
    x = rng.normal(0, 1, (4, 8, 5, 5)).astype(np.float32)
    return quantize_graph(g, x, "powerquant", 4, name="c"), x, g.output_shape


def _bit_exact(model, out, **kw):
    qm, x, out_shape = model
    dev_in, ref = reference_io(qm, x)
    hb = build_host(qm, str(out), **kw)
    np.testing.assert_array_equal(from_device(run_host(hb.runner, dev_in), out_shape), ref)


def _objects(d):
    """name -> inode: a recompiled object is a new file (written aside, then renamed)."""
    return {f: os.stat(os.path.join(d, f)).st_ino for f in os.listdir(d) if f.endswith(".o")}


def test_runtime_objects_are_compiled_once_and_keyed_by_flags_and_source(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("NUPES_EDGE_OBJ_CACHE", str(cache))
    m1, m2 = _model(1), _model(2)
    _bit_exact(m1, tmp_path / "a")
    first = _objects(cache)
    n_sources = len([f for f in os.listdir(tmp_path / "a" / "src" / "runtime") if f.endswith(".c")])
    assert len(first) == n_sources
    _bit_exact(m2, tmp_path / "b")  # another model: every runtime object reused as it was
    assert _objects(cache) == first
    _bit_exact(m2, tmp_path / "c", dsp=True)  # other flags: a second set, the first untouched
    both = _objects(cache)
    assert len(both) == 2 * n_sources and {k: both[k] for k in first} == first
    # a runtime source that differs (as after an edit of runtime_c/) gets its own object
    calls = []
    real_run = build.subprocess.run
    monkeypatch.setattr(build.subprocess, "run", lambda cmd, **kw: calls.append(cmd) or real_run(cmd, **kw))
    src = tmp_path / "d" / "src" / "runtime"
    objects = build._runtime_objects("gcc", build.WARNINGS + ["-O2", "-DNUPES_NO_DSP"],
                                     str(tmp_path / "a" / "src" / "runtime"), str(cache))
    assert calls == [] and set(map(os.path.basename, objects)) <= set(first)
    src.mkdir(parents=True)
    for f in os.listdir(tmp_path / "a" / "src" / "runtime"):
        data = (tmp_path / "a" / "src" / "runtime" / f).read_bytes()
        (src / f).write_bytes(data + (b"\n/* edited */\n" if f == "nupes_pool.c" else b""))
    build._runtime_objects("gcc", build.WARNINGS + ["-O2", "-DNUPES_NO_DSP"], str(src), str(cache))
    assert len(calls) == 1 and calls[0][-3].endswith("nupes_pool.c")
    assert not [f for f in os.listdir(cache) if f.endswith(".tmp")]


def test_an_unusable_cache_compiles_everything(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("NUPES_EDGE_OBJ_CACHE", str(blocker / "obj"))
    assert build._object_cache_dir() is None
    _bit_exact(_model(3), tmp_path / "a", sanitize=True)


def test_the_cache_keeps_the_most_recently_used_objects(tmp_path):
    for i, name in enumerate(["a.o", "b.o", "c.o", "d.o", "e.o", "notes.txt"]):
        (tmp_path / name).write_bytes(b"x")
        os.utime(tmp_path / name, (1_000_000 + i, 1_000_000 + i))
    os.utime(tmp_path / "a.o")  # used just now
    build._prune(str(tmp_path), keep=3)
    assert sorted(os.listdir(tmp_path)) == ["a.o", "d.o", "e.o", "notes.txt"]
