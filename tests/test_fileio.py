"""Atomic writes keep the umask's permissions (a temporary file from mkstemp alone is 0600)."""
import os
import stat

from nupes_edge.fileio import atomic_write_bytes


def test_written_files_get_the_umask_mode(tmp_path):
    for mask, want in ((0o022, 0o644), (0o077, 0o600), (0o002, 0o664)):
        old = os.umask(mask)
        try:
            p = tmp_path / f"f{mask:o}.bin"
            atomic_write_bytes(str(p), b"x")
        finally:
            os.umask(old)
        assert stat.S_IMODE(p.stat().st_mode) == want and p.read_bytes() == b"x"
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".tmp-")]
