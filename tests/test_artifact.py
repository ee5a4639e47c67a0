import zipfile

import numpy as np
import pytest

from nupes_edge import artifact
from nupes_edge.errors import NupesError
from nupes_edge.intref import quantize_input, run_int
from nupes_edge.quant.driver import quantize_graph


@pytest.fixture(scope="module")
def saved(tmp_path_factory, digits_graph, digits_calib):
    qm = quantize_graph(digits_graph, digits_calib, "powerquant", 3)
    path = tmp_path_factory.mktemp("nq") / "m.nq"
    h = artifact.save(qm, str(path))
    return qm, str(path), h


def test_round_trip_keeps_the_integer_model_exactly(saved, digits_test):
    qm, path, h = saved
    back = artifact.load(path)
    assert back.meta["hash"] == h and back.method == "powerquant"
    xq = quantize_input(digits_test[0][:50], qm.input_q.scale, qm.input_q.zero_point)
    np.testing.assert_array_equal(run_int(back, xq), run_int(qm, xq))
    for name, p in qm.params.items():
        q = back.params[name]
        assert type(q) is type(p)
        if hasattr(p, "lut"):
            np.testing.assert_array_equal(p.lut, q.lut)
            np.testing.assert_array_equal(p.packed, q.packed)
            np.testing.assert_array_equal(p.codes, qm.weights[name].codes)
            assert p.a == q.a and p.G == q.G


def test_hash_is_stable_and_tracks_content(saved):
    qm, path, h = saved
    assert artifact.hash_of(artifact.load(path)) == h
    qm.weights[next(iter(qm.weights))].codes.flat[0] ^= 1
    try:
        assert artifact.hash_of(qm) != h
    finally:
        qm.weights[next(iter(qm.weights))].codes.flat[0] ^= 1


def test_truncated_file_is_a_clear_error(saved, tmp_path):
    data = open(saved[1], "rb").read()
    for cut in (10, len(data) // 2, len(data) - 5):
        p = tmp_path / f"cut{cut}.nq"
        p.write_bytes(data[:cut])
        with pytest.raises(NupesError, match=f"cut{cut}.nq"):
            artifact.load(str(p))


def test_flipped_array_byte_is_detected(saved, tmp_path):
    src = saved[1]
    dst = tmp_path / "flip.nq"
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for item in zin.infolist():
            data = zin.read(item.filename)
            if item.filename.endswith(".codes.npy"):
                data = data[:-1] + bytes([data[-1] ^ 0x01])
            zout.writestr(item, data)
    with pytest.raises(NupesError, match="checksum"):
        artifact.load(str(dst))


def test_other_version_and_other_files_are_refused(saved, tmp_path):
    src = saved[1]
    newer = tmp_path / "v99.nq"
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(newer, "w") as zout:
        for item in zin.infolist():
            data = zin.read(item.filename)
            if item.filename == "manifest.json":
                data = data.replace(b'"version": 2', b'"version": 99')
            zout.writestr(item, data)
    with pytest.raises(NupesError, match="version 99"):
        artifact.load(str(newer))
    other = tmp_path / "other.nq"
    other.write_bytes(b"\x00" * 100)
    with pytest.raises(NupesError, match="not a nupes-edge model"):
        artifact.load(str(other))


def test_failed_write_leaves_no_partial_file(saved, tmp_path, monkeypatch):
    qm = saved[0]
    target = tmp_path / "out.nq"

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr("os.fsync", boom)
    with pytest.raises(OSError):
        artifact.save(qm, str(target))
    assert list(tmp_path.iterdir()) == []


def _with_manifest(data: bytes, edit, drop=()) -> bytes:
    import io

    src = zipfile.ZipFile(io.BytesIO(data))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        for n in src.namelist():
            if n not in drop:
                z.writestr(n, edit(src.read(n)) if n == "manifest.json" else src.read(n))
    return out.getvalue()


def test_a_changed_manifest_is_refused_unless_resealed(saved, tmp_path):
    data = open(saved[1], "rb").read()
    # A harmless-looking hand edit: the manifest stays valid JSON and valid model.
    edited = _with_manifest(data, lambda b: b.replace(b'"method": "powerquant"', b'"method": "uniform"'))
    with pytest.raises(NupesError, match="changed after the file was written"):
        artifact.loads(edited, "edited.nq")
    assert artifact.loads(artifact.reseal(edited)).method == "uniform"
    unsealed = _with_manifest(data, lambda b: b, drop=(artifact.SEAL,))
    with pytest.raises(NupesError, match="no seal"):
        artifact.loads(unsealed, "unsealed.nq")
    # Re-sealing an untouched file changes nothing.
    assert artifact.loads(artifact.reseal(data)).meta["hash"] == saved[2]


def test_the_same_quantization_twice_gives_the_same_bytes(tmp_path):
    """A .nq is a pure function of its inputs: timings stay out of the hashed manifest (a firmware
    built from one run is accepted with the other's file)."""
    from tests.test_cli import cli

    for name in ("a.nq", "b.nq"):
        r = cli("quantize", "digits", "--data", "digits", "--method", "nupes", "--wbits", "4", "-o", name, "--quiet",
                cwd=tmp_path)
        assert r.returncode == 0, r.stderr
    assert (tmp_path / "a.nq").read_bytes() == (tmp_path / "b.nq").read_bytes()
    assert "seconds" not in artifact.load(str(tmp_path / "a.nq")).meta
