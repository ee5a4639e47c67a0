"""A quantized model built for an emulated board, every input run over the serial protocol and
compared with the integer reference: what the kernel tests on a board share."""
import numpy as np


def run_on_board(qm, x, out_dir, board: str = "stm32", profile: bool = False, max_seconds: int = 300):
    """Build ``qm`` for ``board`` into ``out_dir``, run every input of ``x`` on QEMU; (firmware, report)."""
    from nupes_edge import boards, firmware
    from nupes_edge.flash import start_qemu
    from nupes_edge.protocol import Client
    from nupes_edge.verify import verify_device

    fb = firmware.build_firmware(qm, boards.get(board), str(out_dir))
    with start_qemu(fb.board, fb.elf, max_seconds=max_seconds) as q:
        with Client(q.url, timeout=5.0, retries=5) as c:
            c.wait_banner(5.0)
            return fb, verify_device(qm, c, x, np.zeros(len(x), np.int64), profile=profile)
