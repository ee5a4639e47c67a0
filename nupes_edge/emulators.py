"""The emulators ``nupes-edge flash`` started from a folder (.nupes-edge/qemu.json).

The file is untrusted (anyone can edit it), so nothing is signalled on its word alone: a process is
stopped only if it is still the one nupes-edge started, a ``timeout ... qemu-system-arm`` leading
its own process group, running the firmware the file names (read from /proc). Entries whose
process is gone are dropped, so a crashed emulator leaves no stale state. The file is replaced
atomically (never written through a symlink).
"""
from __future__ import annotations

import json
import os
import signal

from .errors import NupesError
from .fileio import atomic_write_bytes

STATE = os.path.join(".nupes-edge", "qemu.json")


def _cmdline(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
    except OSError:
        return []


def ours(entry: dict) -> bool:
    """True when ``entry``'s pid is a live emulator that nupes-edge started with that firmware."""
    pid, elf = entry.get("pid"), entry.get("elf")
    if not (isinstance(pid, int) and not isinstance(pid, bool) and 1 < pid < 1 << 22 and isinstance(elf, str)):
        return False
    cmd = _cmdline(pid)
    if not cmd or os.path.basename(cmd[0]) != "timeout" or not any("qemu-system-arm" in a for a in cmd):
        return False
    if not any(a == elf or a.endswith(f"file={elf}") or elf in a for a in cmd):
        return False
    try:
        return os.getpgid(pid) == pid
    except OSError:
        return False


def load(path: str = STATE) -> list[dict]:
    """The live emulators recorded in ``path`` (an unreadable or malformed file records none)."""
    if not os.path.isfile(path) or os.path.islink(path):
        return []
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return []
    entries = data.get("emulators", [data]) if isinstance(data, dict) else []
    return [e for e in entries if isinstance(e, dict) and ours(e)]


def save(entries: list[dict], path: str = STATE) -> None:
    if os.path.islink(path):
        os.unlink(path)
    if entries:
        atomic_write_bytes(path, json.dumps({"emulators": entries}).encode())
    elif os.path.exists(path):
        os.unlink(path)


def add(entry: dict, path: str = STATE) -> None:
    save(load(path) + [entry], path)


def refuse_if_running(path: str = STATE) -> None:
    live = load(path)
    save(live, path)  # drop the dead ones
    if live:
        e = live[0]
        raise NupesError(f"an emulator started from this folder is still running (pid {e['pid']}, "
                         f"socket://127.0.0.1:{e.get('port')}); verify on it, or end it first with "
                         "`nupes-edge flash --stop`")


def stop_all(path: str = STATE) -> list[int]:
    """Stop every live emulator this folder started; returns their pids."""
    live = load(path)
    stopped = []
    for e in live:
        try:
            os.killpg(e["pid"], signal.SIGTERM)
            stopped.append(e["pid"])
        except (ProcessLookupError, PermissionError):
            pass
    save([], path)
    return stopped
