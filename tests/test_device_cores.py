"""Every emulated core: the counter counts emulated instructions (checked against a loop of known
length on the board itself), and the boards report their memory. The models themselves run on
every core in tests/test_device_qemu.py::test_every_emulated_core_is_bit_exact_with_the_reference."""
import shutil

import pytest

from nupes_edge import boards, examples, firmware
from nupes_edge.flash import start_qemu
from nupes_edge.importers import import_module
from nupes_edge.protocol import Client
from nupes_edge.quant.driver import quantize_graph
from nupes_edge.verify import _count_kind

pytestmark = pytest.mark.skipif(shutil.which("qemu-system-arm") is None or shutil.which("arm-none-eabi-gcc") is None,
                                reason="make setup installs qemu-system-arm and arm-none-eabi-gcc")
EMULATED = [b.name for b in boards.all_boards() if b.emulated]


@pytest.fixture(scope="module")
def digits_w8():
    g = import_module(examples.model("digits", progress=False), examples.models.example_input("digits"), "digits")
    return quantize_graph(g, examples.load("digits", "calib")[0], "uniform", 8, name="digits")


@pytest.mark.parametrize("name", EMULATED)
def test_counter_counts_emulated_instructions(name, digits_w8, tmp_path):
    """2,000,000 instructions of SUBS/BNE read back within the counter's resolution (one count is
    1/counts-per-instruction instructions) plus the ~100 instructions of the two counter reads."""
    board = boards.get(name)
    fb = firmware.build_firmware(digits_w8, board, str(tmp_path))
    with start_qemu(board, fb.elf, max_seconds=120) as q, Client(q.url, timeout=10.0) as c:
        assert c.wait_banner(5.0)
        hello = c.hello()
        kind, per_instruction = _count_kind(hello, board)
        assert kind == "emulated_instructions"
        counted = [c.calibrate(n) / per_instruction for n in (1_000_000, 2_000_000)]
    resolution = 1 / per_instruction
    # the difference of two loops cancels the fixed cost of the counter reads
    assert abs((counted[1] - counted[0]) - 2_000_000) <= 2 * resolution + 2, counted
    assert 2_000_000 <= counted[0] <= 2_000_000 + 200 + resolution, counted
