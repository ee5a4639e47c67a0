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


@contextlib.contextmanager
def folder_lock(folder: str, what: str = "build"):
    """Hold an exclusive lock on ``folder`` (a lock file beside it) for the ``with`` body. A second
    process waits, saying so on stderr, and gives up with a clear error after LOCK_WAIT_S."""
    folder = os.path.abspath(folder)
    parent = os.path.dirname(folder)
    os.makedirs(parent, exist_ok=True)
    path = os.path.join(parent, f".{os.path.basename(folder)}.lock")
    with open(path, "a") as f:
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
    ``folder`` is never half-written. Call it under folder_lock."""
    folder = os.path.abspath(folder)
    parent = os.path.dirname(folder)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(dir=parent, prefix=f".{os.path.basename(folder)}.tmp-")
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
