"""Reading .npy / .npz from untrusted files: headers checked before numpy allocates anything."""
from __future__ import annotations

import io
import os
import zipfile
import zlib

import numpy as np

from .errors import NupesError

MAX_ARRAY_BYTES = 1 << 28  # a data array larger than this (256 MiB) is refused: peak memory stays under 1 GB


def read_npy(raw: bytes, what: str) -> np.ndarray:
    """An .npy payload whose header is checked before numpy allocates: a plain numeric dtype and a
    shape whose size is exactly the bytes that follow."""
    return _read_npy_stream(io.BytesIO(raw), len(raw), what)


def _read_npy_stream(f, size: int, what: str) -> np.ndarray:
    """An .npy entry of ``size`` bytes read straight into its array (one copy of the data in memory,
    so a highly compressed entry costs its unpacked size once, not twice)."""
    try:
        version = np.lib.format.read_magic(f)
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read(f, max_header_size=10000)
    except (ValueError, OSError) as e:
        raise NupesError(f"{what}: not a valid .npy array ({e})") from None
    if dtype.kind not in "biuf" or dtype.hasobject:
        raise NupesError(f"{what}: dtype {dtype} is not a plain numeric type")
    n = 1
    for d in shape:
        n *= int(d)
    left = size - f.tell()
    if n * dtype.itemsize != left:
        raise NupesError(f"{what}: its header declares shape {tuple(shape)} ({n * dtype.itemsize} bytes) "
                         f"but {left} bytes follow")
    arr = np.empty(shape, dtype, order="F" if fortran else "C")
    view = memoryview(arr.reshape(-1, order="A").view(np.uint8))
    got = 0
    while got < left:
        k = f.readinto(view[got:])
        if not k:
            raise NupesError(f"{what}: the data ends after {got} of {left} bytes")
        got += k
    return arr


def read_npz(path: str, names: tuple[str, ...], optional: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
    """The named arrays of an .npz (a zip of .npy), each header checked and size-bounded first
    (``optional`` ones only when present)."""
    out = {}
    try:
        size = os.path.getsize(path)
        with zipfile.ZipFile(path) as z:
            files = {n[:-4]: n for n in z.namelist() if n.endswith(".npy")}
            missing = [n for n in names if n not in files]
            if missing:
                raise NupesError(f"{path}: the .npz must hold arrays {' and '.join(repr(n) for n in names)} "
                                 f"(found: {', '.join(sorted(files)) or 'none'})")
            for n in [*names, *(o for o in optional if o in files)]:
                info = z.getinfo(files[n])
                if info.file_size > MAX_ARRAY_BYTES:
                    raise NupesError(f"{path}: array '{n}' unpacks to {info.file_size:,} bytes (at most {MAX_ARRAY_BYTES:,}; "
                                     "a calibration or test set needs far fewer samples: save a subset)")
                if info.compress_size > size:  # zipfile would allocate the declared size before reading
                    raise NupesError(f"{path}: array '{n}' declares {info.compress_size} stored bytes, more than "
                                     f"the file's {size} (truncated or damaged)")
                with z.open(files[n]) as f:
                    out[n] = _read_npy_stream(f, info.file_size, f"{path}: array '{n}'")
    except NupesError:
        raise
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError, NotImplementedError, zlib.error,
            RuntimeError) as e:  # zipfile raises RuntimeError for an entry flagged as encrypted
        raise NupesError(f"{path}: not a readable .npz file ({type(e).__name__}: {str(e)[:200]})") from None
    return out
