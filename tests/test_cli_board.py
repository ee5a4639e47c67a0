"""The board workflow as a user types it: init → run (build + QEMU + verify), flash errors, exit codes."""
import json
import shutil
import socket

import numpy as np
import pytest

from tests.test_cli import cli

needs_emulator = pytest.mark.skipif(shutil.which("qemu-system-arm") is None or shutil.which("arm-none-eabi-gcc") is None,
                                    reason="make setup installs qemu-system-arm and arm-none-eabi-gcc")


@needs_emulator
def test_run_in_an_initialized_project_is_bit_exact_and_deterministic(tmp_path):
    assert cli("init", "--example", "digits", "--method", "powerquant", "proj", cwd=tmp_path).returncode == 0
    proj = tmp_path / "proj"
    runs = []
    for _ in range(2):
        r = cli("run", "--board", "stm32", "--json", "-n", "40", cwd=proj)
        assert r.returncode == 0, r.stderr
        runs.append(json.loads(r.stdout))
    for d in runs:
        assert d["mismatches"] == 0 and d["n"] == 40 and d["count_kind"] == "emulated_instructions"
    assert runs[0]["count_mean"] == runs[1]["count_mean"] > 0
    assert (proj / "build" / "stm32" / "firmware.elf").exists() and (proj / "build" / "stm32" / "firmware.bin").exists()
    # build alone reports sizes against the board's memory
    b = json.loads(cli("build", "--board", "stm32", "--json", cwd=proj).stdout)
    assert b["board"] == "stm32f405" and 0 < b["flash_used"] < b["flash_bytes"] and 0 < b["ram_used"] < b["ram_bytes"]
    # nothing changed: the same result in under 2 s (no quantizing, compiling or report), and not once a file is gone
    import time

    t0 = time.monotonic()
    r = cli("build", "--board", "stm32", "--json", cwd=proj)
    assert time.monotonic() - t0 < 2.0 and json.loads(r.stdout) == b and "up to date" not in r.stdout
    assert "up to date" in cli("build", "--board", "stm32", cwd=proj).stdout
    (proj / "build" / "stm32" / "report.html").unlink()
    r = cli("build", "--board", "stm32", cwd=proj)
    assert "up to date" not in r.stdout and (proj / "build" / "stm32" / "report.html").exists()
    assert "up to date" not in cli("build", "--board", "stm32", "--ram-budget", "64K", cwd=proj).stdout


def test_flashing_a_real_board_without_a_probe_is_a_clear_error(tmp_path):
    elf = tmp_path / "firmware.elf"
    elf.write_bytes(b"\x7fELF")
    r = cli("flash", "x.nq", "--board", "nucleo-f446re", "--probe", "auto", "--elf", str(elf), cwd=tmp_path)
    assert r.returncode == 2 and "cannot flash nucleo-f446re" in r.stderr and "Traceback" not in r.stderr


def test_verify_on_a_dead_port_is_a_clear_error(tmp_path):
    from nupes_edge import artifact, examples
    from nupes_edge.importers import import_module
    from nupes_edge.quant.driver import quantize_graph

    g = import_module(examples.model("digits", progress=False), examples.models.example_input("digits"), "digits")
    artifact.save(quantize_graph(g, examples.load("digits", "calib")[0], "uniform", 8, name="digits"), str(tmp_path / "m.nq"))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    r = cli("verify", "m.nq", "--port", f"socket://127.0.0.1:{port}", "-n", "3", cwd=tmp_path)
    assert r.returncode == 2 and "cannot open" in r.stderr


def test_no_model_and_no_project_is_a_usage_error(tmp_path):
    r = cli("build", "--board", "stm32", cwd=tmp_path)
    assert r.returncode == 2 and "nupes-edge.toml" in r.stderr


def test_verify_exits_1_with_a_readable_diff_on_any_mismatch(tmp_path, monkeypatch, capsys):
    from nupes_edge import artifact, build, cli as cli_mod, examples
    from nupes_edge.importers import import_module
    from nupes_edge.quant.driver import quantize_graph

    g = import_module(examples.model("digits", progress=False), examples.models.example_input("digits"), "digits")
    path = str(tmp_path / "m.nq")
    artifact.save(quantize_graph(g, examples.load("digits", "calib")[0], "uniform", 8, name="digits"), path)
    real_run = build.run_host

    def one_wrong_byte(runner, inputs, timeout=120.0):
        out = real_run(runner, inputs, timeout).copy()
        out[3, 0] = np.int8(out[3, 0] ^ 1)
        return out

    monkeypatch.setattr(build, "run_host", one_wrong_byte)
    assert cli_mod.main(["verify", path, "--board", "host", "-n", "10"]) == 1
    text = capsys.readouterr().out
    assert "FAIL: 1 of 10" in text and "input 3: reference" in text
