"""Emulators started with `nupes-edge flash` are tracked per folder: a second flash is refused while
one runs, --stop ends every one, and .nupes-edge/qemu.json (untrusted) can never make nupes-edge
signal a process it did not start."""
import json
import os
import shutil
import subprocess
import sys
import time

import pytest

from tests.test_cli import cli

needs_emulator = pytest.mark.skipif(shutil.which("qemu-system-arm") is None or shutil.which("arm-none-eabi-gcc") is None,
                                    reason="make setup installs qemu-system-arm and arm-none-eabi-gcc")


@needs_emulator
def test_second_flash_is_refused_and_stop_ends_the_emulator(tmp_path):
    assert cli("init", "--example", "digits", "--method", "powerquant", "proj", cwd=tmp_path).returncode == 0
    proj = tmp_path / "proj"
    assert cli("build", "--board", "stm32", cwd=proj).returncode == 0
    first = cli("flash", "--json", cwd=proj)
    assert first.returncode == 0, first.stderr
    pid = json.loads(first.stdout)["pid"]
    try:
        second = cli("flash", cwd=proj)
        assert second.returncode == 2 and "still running" in second.stderr and str(pid) in second.stderr
        stop = cli("flash", "--stop", cwd=proj)
        assert stop.returncode == 0 and str(pid) in stop.stdout
        for _ in range(50):  # the process group is gone (or a zombie reaped by init)
            if not os.path.exists(f"/proc/{pid}") or "Z" in open(f"/proc/{pid}/stat").read().split()[2]:
                break
            time.sleep(0.1)
        else:
            pytest.fail("the emulator still runs after --stop")
        again = cli("flash", "--stop", cwd=proj)
        assert again.returncode == 2 and "no emulator" in again.stderr
    finally:
        try:
            os.killpg(pid, 9)
        except OSError:
            pass


@pytest.mark.parametrize("content", ['{"pid": SELF}', '{"pid": 0, "elf": "x"}', '{"pid": "abc"}', '{"pid": 1e3}',
                                     'null', '[', '{"emulators": [{"pid": SELF, "elf": "build/stm32/firmware.elf"}]}'])
def test_a_forged_state_file_never_signals_another_process(tmp_path, content):
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
    try:
        (tmp_path / ".nupes-edge").mkdir()
        (tmp_path / ".nupes-edge" / "qemu.json").write_text(content.replace("SELF", str(bystander.pid)))
        r = cli("flash", "--stop", cwd=tmp_path)
        assert r.returncode == 2 and "no emulator" in r.stderr and "Traceback" not in r.stderr
        assert bystander.poll() is None  # still alive
    finally:
        bystander.kill()
        bystander.wait()


@needs_emulator
def test_every_hint_flash_prints_works_when_pasted(tmp_path):
    """Outside a project: the 'build first' hint and the 'next: verify' hint name the model, so each
    runs as printed."""
    import re
    import shlex

    assert cli("quantize", "digits", "--data", "digits", "--method", "uniform", "-o", "d.nq", "--quiet",
               cwd=tmp_path).returncode == 0
    r = cli("flash", "d.nq", "--board", "stm32", cwd=tmp_path)
    assert r.returncode == 2
    hint = re.search(r"`nupes-edge ([^`]+)`", r.stderr).group(1)
    assert cli(*shlex.split(hint), cwd=tmp_path).returncode == 0, hint
    r = cli("flash", "d.nq", "--board", "stm32", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    try:
        nxt = re.search(r"next: nupes-edge (.+)", r.stdout).group(1)
        v = cli(*shlex.split(nxt), "-n", "20", cwd=tmp_path)
        assert v.returncode == 0 and "PASS" in v.stdout, v.stdout + v.stderr
    finally:
        assert cli("flash", "--stop", cwd=tmp_path).returncode == 0
