"""Board definitions and firmware builds (cross-compiled; no board needed)."""
import dataclasses
import json
import shutil

import pytest

from nupes_edge import boards, examples, firmware
from nupes_edge.errors import NupesError
from nupes_edge.importers import import_module
from nupes_edge.quant.driver import quantize_graph

needs_arm = pytest.mark.skipif(shutil.which("arm-none-eabi-gcc") is None, reason="make setup installs it")


def test_stm32_is_the_emulated_f405_and_real_boards_carry_their_memory_maps():
    b = boards.get("stm32")
    assert b.name == "stm32f405" and b.emulated and b.qemu["machine"] == "netduinoplus2"
    assert b.ram_bytes == 128 * 1024  # real F405 SRAM, though QEMU maps 192 KiB
    real = {x.name: x for x in boards.all_boards() if not x.emulated}
    assert set(real) == {"nucleo-f446re", "stm32f4-discovery", "nucleo-l476rg", "nucleo-h743zi"}
    assert real["nucleo-f446re"].flash_bytes == 512 * 1024
    assert real["nucleo-l476rg"].ram_bytes == 96 * 1024 and real["nucleo-l476rg"].uart["layout"] == "v2"
    assert "-mcpu=cortex-m7" in real["nucleo-h743zi"].cflags and real["nucleo-h743zi"].memory["ram_origin"] == 0x24000000
    with pytest.raises(NupesError, match="unknown board 'esp32'"):
        boards.get("esp32")


@pytest.fixture(scope="module")
def digits_qm():
    g = import_module(examples.model("digits", progress=False), examples.models.example_input("digits"), "digits")
    return quantize_graph(g, examples.load("digits", "calib")[0], "powerquant", 4, name="digits")


@needs_arm
@pytest.mark.parametrize("name", [b.name for b in boards.all_boards()])
def test_firmware_builds_for_every_board(digits_qm, tmp_path, name):
    fb = firmware.build_firmware(digits_qm, boards.get(name), str(tmp_path))
    assert fb.sizes["flash_used"] < fb.sizes["flash_bytes"] and fb.sizes["ram_used"] < fb.sizes["ram_bytes"]
    assert open(fb.bin, "rb").read(4) != b"\x7fELF"  # a raw image next to the ELF


@needs_arm
def test_a_model_that_does_not_fit_is_refused_with_the_numbers(digits_qm, tmp_path):
    tiny = dataclasses.replace(boards.get("stm32"), memory={**boards.get("stm32").memory, "ram_size": 8192})
    with pytest.raises(NupesError, match=r"does not fit stm32f405 .*8192 B RAM.*RAM overflowed by \d+ B"):
        firmware.build_firmware(digits_qm, tiny, str(tmp_path))
    assert not (tmp_path / "firmware.elf").exists()


def test_missing_toolchain_names_the_install_command(digits_qm, tmp_path, monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(NupesError, match="apt-get install --no-install-recommends gcc-arm-none-eabi"):
        firmware.build_firmware(digits_qm, boards.get("stm32"), str(tmp_path))


def test_boards_command_marks_the_emulated_board():
    from tests.test_cli import cli

    r = cli("boards", "--json")
    assert r.returncode == 0
    rows = {b["name"]: b for b in json.loads(r.stdout)["boards"]}
    assert rows["stm32f405"]["emulated"] and "stm32" in rows["stm32f405"]["aliases"]
    assert not rows["nucleo-h743zi"]["emulated"]


def test_board_names_ignore_case_and_a_near_miss_gets_a_suggestion():
    assert boards.get("STM32").name == "stm32f405" and boards.get("Cortex-M55").name == "mps3-an547"
    with pytest.raises(NupesError, match="did you mean 'nucleo-f446re'"):
        boards.get("nucleo-f446")


def test_every_core_has_an_emulated_board_standing_for_real_parts():
    emulated = {b.cpu: b for b in boards.all_boards() if b.emulated}
    assert set(emulated) >= {"cortex-m3", "cortex-m4", "cortex-m7", "cortex-m33", "cortex-m55"}
    for b in emulated.values():
        assert f"-mcpu={b.cpu}" in b.cflags and b.qemu["counter_timer"]["hz"] > 0
