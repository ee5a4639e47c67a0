import io
import numpy as np
import pytest

from nupes_edge.data import load_data
from nupes_edge.errors import NupesError


def _npz(tmp_path, **arrays):
    p = tmp_path / "d.npz"
    np.savez(p, **arrays)
    return str(p)


def test_npz_round_trip(tmp_path):
    x = np.zeros((3, 1, 8, 8), np.float32)
    got_x, got_y = load_data(_npz(tmp_path, x=x, y=np.array([0, 1, 2])), input_shape=(1, 8, 8))
    assert got_x.shape == (3, 1, 8, 8) and list(got_y) == [0, 1, 2]


@pytest.mark.parametrize("arrays,needle", [
    ({"w": np.zeros((2, 4), np.float32)}, "'x'"),
    ({"x": np.zeros((2, 4), np.int32), "y": np.zeros(2, np.int64)}, "float32"),
    ({"x": np.zeros((2, 4), np.float32), "y": np.zeros(2, np.float32)}, "integer labels"),
    ({"x": np.zeros((2, 4), np.float32), "y": np.zeros(3, np.int64)}, "one label per row"),
    ({"x": np.full((2, 4), np.nan, np.float32), "y": np.zeros(2, np.int64)}, "NaN"),
    ({"x": np.zeros((2, 5), np.float32), "y": np.zeros(2, np.int64)}, "model takes"),
])
def test_bad_data_files_are_named(tmp_path, arrays, needle):
    with pytest.raises(NupesError, match=needle):
        load_data(_npz(tmp_path, **arrays), input_shape=(4,))


def test_missing_and_unreadable_files(tmp_path):
    with pytest.raises(NupesError, match="no such file"):
        load_data(str(tmp_path / "nope.npz"))
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"garbage")
    with pytest.raises(NupesError, match="bad.npz"):
        load_data(str(bad))


def test_labels_outside_the_models_classes_are_refused(tmp_path):
    p = tmp_path / "d.npz"
    np.savez(p, x=np.zeros((3, 1, 8, 8), np.float32), y=np.array([0, 99, 2]))
    with pytest.raises(NupesError, match="label 99 is outside the model's 10 classes"):
        load_data(str(p), input_shape=(1, 8, 8), n_classes=10)
    assert len(load_data(str(p), input_shape=(1, 8, 8))[0]) == 3  # calibration ignores labels


def test_a_file_that_is_not_an_npz_says_so(tmp_path):
    p = tmp_path / "d.npz"
    p.write_bytes(b"x,y\n1,2\n")
    with pytest.raises(NupesError, match="not an .npz file"):
        load_data(str(p))


def _zeros_npz(path, n_bytes):
    """An .npz whose 'x' unpacks to n_bytes of float32 zeros, written in chunks (a 500 KB file)."""
    import zipfile

    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False, "shape": (n_bytes // 4,)})
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z, z.open("x.npy", "w", force_zip64=True) as f:
        f.write(header.getvalue())
        chunk = bytes(1 << 20)
        for _ in range(n_bytes >> 20):
            f.write(chunk)


def test_a_small_npz_that_unpacks_past_the_limit_is_refused_before_reading(tmp_path):
    """Issue: a 538 KB .npz inflating to 512 MiB peaked at 1.3 GB. Arrays are now at most 256 MiB,
    refused from the zip's directory before anything is unpacked, and read in one copy."""
    import resource

    _zeros_npz(tmp_path / "bomb.npz", 300 << 20)
    assert (tmp_path / "bomb.npz").stat().st_size < 1 << 20
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(NupesError, match="unpacks to 314,572,928 bytes .*save a subset"):
        load_data(str(tmp_path / "bomb.npz"))
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 64 << 10  # KiB: nothing was unpacked
