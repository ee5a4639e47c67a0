"""Atomic file writes and the on-disk cache location."""
from __future__ import annotations

import os
import tempfile


def atomic_write_bytes(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the whole new one."""
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=d, prefix=".tmp-", suffix=os.path.basename(path))
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def cache_dir() -> str:
    """Where trained example models and other reusable results live ($NUPES_EDGE_CACHE)."""
    d = os.environ.get("NUPES_EDGE_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "nupes-edge")
    os.makedirs(d, exist_ok=True)
    return d
