"""One build at a time per output folder, and output folders that appear whole or not at all."""
from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import sys
import tempfile
import time

from .errors import NupesError

LOCK_WAIT_S = 600.0


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def checked_output_folder(folder: str) -> str:
    """``folder`` resolved, if nupes-edge may replace it whole; else a NupesError.

    The one rule for every folder a command replaces (codegen, build): never empty (an unset shell
    variable, ``-o "$OUT"``), never the current folder, one of its parents, the root or the home
    folder, and never a symlink (its target would be replaced)."""
    if not isinstance(folder, str) or not folder.strip():
        raise NupesError("the output folder is empty (an unset variable in -o \"$OUT\"?); name a new or empty folder")
    if os.path.islink(folder.rstrip(os.sep) or folder):
        raise NupesError(f"{folder}: is a symlink; nupes-edge replaces its output folder whole, so give it a real folder")
    path = os.path.realpath(folder)
    cwd = os.path.realpath(os.getcwd())
    home = os.path.realpath(os.path.expanduser("~"))
    if path in (os.sep, home) or cwd == path or cwd.startswith(path.rstrip(os.sep) + os.sep):
        raise NupesError(f"{folder}: is the current folder, one of its parents, the root or the home folder; "
                         "nupes-edge replaces its output folder whole, so name a new or empty folder")
    return path


@contextlib.contextmanager
def folder_lock(folder: str, what: str = "build"):
    """Hold an exclusive lock on ``folder`` (a lock file beside it) for the ``with`` body. A second
    process waits, saying so on stderr, and gives up with a clear error after LOCK_WAIT_S."""
    folder = checked_output_folder(folder)
    parent = os.path.dirname(folder)
    os.makedirs(parent, exist_ok=True)
    path = os.path.join(parent, f".{os.path.basename(folder)}.lock")
    if os.path.islink(path):
        raise NupesError(f"{path}: the lock file is a symlink; delete it")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, 0o644)
    with os.fdopen(fd, "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"nupes-edge: waiting for another {what} in {folder} ...", file=sys.stderr, flush=True)
            deadline = time.monotonic() + LOCK_WAIT_S
            while True:
                try:
                    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise NupesError(f"{folder}: another {what} has held it for {LOCK_WAIT_S:.0f} s; "
                                         f"if none is running, delete {path}") from None
                    time.sleep(0.2)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


@contextlib.contextmanager
def fresh_folder(folder: str):
    """Yield a new temporary folder beside ``folder``; when the ``with`` body succeeds it replaces
    ``folder`` (old contents removed), when it fails (or is interrupted) it is deleted, so
    ``folder`` is never half-written. Call it under folder_lock: then any earlier temporary folder of
    ``folder`` (left by a killed build) is stale, and removed."""
    folder = checked_output_folder(folder)
    parent = os.path.dirname(folder)
    os.makedirs(parent, exist_ok=True)
    base = os.path.basename(folder)
    for entry in os.listdir(parent):
        stale = os.path.join(parent, entry)
        if entry.startswith((f".{base}.tmp-", f".{base}.old-")) and os.path.isdir(stale) and not os.path.islink(stale):
            shutil.rmtree(stale, ignore_errors=True)
    tmp = tempfile.mkdtemp(dir=parent, prefix=f".{os.path.basename(folder)}.tmp-")
    os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700; the folder gets what mkdir would give
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if os.path.exists(folder):
        old = tempfile.mkdtemp(dir=parent, prefix=f".{os.path.basename(folder)}.old-")
        os.rmdir(old)
        os.replace(folder, old)
    os.replace(tmp, folder)
    if old:
        shutil.rmtree(old, ignore_errors=True)
