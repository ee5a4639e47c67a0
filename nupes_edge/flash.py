"""Put firmware on a board: QEMU for emulated boards, pyocd / st-flash / openocd for real ones."""
from __future__ import annotations

import os
import select
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass

from .boards import Board
from .errors import NupesError

QEMU_INSTALL = "sudo apt-get install --no-install-recommends qemu-system-arm (or run `make setup`)"
PROBES = ("qemu", "pyocd", "stlink", "openocd", "auto")


@dataclass
class Qemu:
    proc: subprocess.Popen
    port: int
    board: Board

    @property
    def url(self) -> str:
        return f"socket://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def qemu_command(board: Board, elf: str, listen_fd: int) -> list[str]:
    q = board.qemu
    return ["qemu-system-arm", "-M", q["machine"], "-kernel", elf, "-display", "none", "-monitor", "none",
            # the console is a listening socket this process opened (no port can be taken between
            # choosing it and QEMU binding it); nodelay: small frames go out at once (Nagle +
            # delayed ACKs cost ~40 ms per round trip)
            "-chardev", f"socket,id=console,fd={listen_fd},server=on,wait=on,nodelay=on", "-serial", "chardev:console",
            # deterministic virtual time: 2^shift ns per instruction, no sleeping while idle
            "-icount", f"shift={q['icount_shift']},align=off,sleep=off"]


def _wait_until_listening(proc: subprocess.Popen, timeout: float) -> str | None:
    """None once QEMU waits for its client (it says so on stderr before it blocks in accept),
    else why it did not get there: what it printed before it exited, or that it did not start."""
    deadline = time.monotonic() + timeout
    said = b""
    fd = proc.stderr.fileno()
    while b"waiting for connection" not in said:
        left = deadline - time.monotonic()
        if left <= 0:
            return "it did not start within %.0f s" % timeout
        if select.select([fd], [], [], left)[0]:
            chunk = os.read(fd, 4096)
            if not chunk:  # stderr closed: QEMU ended
                proc.wait()
                return said.decode(errors="replace").strip()[-500:] or f"exit code {proc.returncode}"
            said += chunk
    return None


def start_qemu(board: Board, elf: str, max_seconds: float = 3600.0, detach: bool = False) -> Qemu:
    """Start the emulator on ``elf`` with its console on a TCP port; the guest waits for the client.

    QEMU runs under ``timeout`` so a forgotten emulator ends by itself after ``max_seconds``.
    The port is a socket bound and listening here, handed to QEMU: a client that connects to it can
    only reach this emulator (choosing a free port and letting QEMU bind it later raced with other
    emulators started at the same moment: a client could land on another test's QEMU).
    """
    if not board.emulated:
        raise NupesError(f"board '{board.name}' is not emulated; flash it with --probe pyocd|stlink|openocd")
    if shutil.which("qemu-system-arm") is None:
        raise NupesError(f"qemu-system-arm not found; install it: {QEMU_INSTALL}")
    if not os.path.isfile(elf):
        raise NupesError(f"{elf}: no such firmware; run `nupes-edge build --board {board.name}` first")
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        port = listener.getsockname()[1]
        fd = listener.fileno()
        cmd = ["timeout", "-k", "5", str(int(max_seconds)), *qemu_command(board, elf, fd)]
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                pass_fds=(fd,), start_new_session=detach)
    why = _wait_until_listening(proc, 10.0)
    if why is not None:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        raise NupesError(f"qemu-system-arm failed to start: {why}")
    return Qemu(proc, port, board)


def _run(cmd: list[str], timeout: float) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise NupesError(f"{cmd[0]} did not finish within {timeout:.0f} s (is a probe connected?)") from None


def flash_probe(board: Board, elf: str, binf: str, probe: str, timeout: float = 60.0) -> str:
    """Flash a real board; returns the tool used. No probe connected → a clear error, never a hang."""
    if probe == "qemu":
        raise NupesError("--probe qemu starts the emulator; use `nupes-edge flash --probe qemu`")
    order = ["pyocd", "stlink", "openocd"] if probe == "auto" else [probe]
    tried = []
    for tool in order:
        if tool == "pyocd":
            beside = os.path.join(os.path.dirname(sys.executable), "pyocd")  # the same venv as nupes-edge
            exe = beside if os.path.isfile(beside) else shutil.which("pyocd")
            if exe is None:
                tried.append("pyocd (not installed: pip install 'nupes-edge[probes]')")
                continue
            listing = _run([exe, "list", "--probes"], 20)
            if "No available debug probes" in listing.stdout + listing.stderr or listing.returncode != 0:
                tried.append("pyocd (no debug probe connected)")
                continue
            target = board.probe.get("pyocd_target")
            r = _run([exe, "flash", "-t", target, elf], timeout)
        elif tool == "stlink":
            exe = shutil.which("st-flash")
            if exe is None:
                tried.append("st-flash (not installed: sudo apt-get install stlink-tools)")
                continue
            r = _run([exe, "--reset", "write", binf, f"0x{board.memory['flash_origin']:08X}"], timeout)
            if r.returncode != 0 and "Couldn't find any ST-Link" in r.stdout + r.stderr:
                tried.append("st-flash (no ST-LINK connected)")
                continue
        elif tool == "openocd":
            exe = shutil.which("openocd")
            if exe is None:
                tried.append("openocd (not installed: sudo apt-get install openocd)")
                continue
            if any(c in elf for c in '{}\\\n\r"[]$;'):  # Tcl's special characters: refused, never interpreted
                raise NupesError(f"{elf!r}: openocd reads this path as Tcl; rename it without {{ }} [ ] $ ; \\ or quotes")
            r = _run([exe, "-f", "interface/stlink.cfg", "-f", board.probe.get("openocd_target", ""),
                      "-c", f"program {{{elf}}} verify reset exit"], timeout)
        else:
            raise NupesError(f"unknown probe '{tool}' (one of {', '.join(PROBES)})")
        if r.returncode != 0:
            raise NupesError(f"{tool} could not flash {board.name}: {(r.stderr or r.stdout).strip()[-400:]}")
        return tool
    raise NupesError(f"cannot flash {board.name}: " + "; ".join(tried))
