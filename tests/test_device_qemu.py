"""End to end on the emulated STM32F405 (QEMU netduinoplus2) over a real TCP serial port."""
import shutil

import pytest

from nupes_edge import boards, examples, firmware
from nupes_edge.errors import NupesError
from nupes_edge.flash import start_qemu
from nupes_edge.importers import import_module
from nupes_edge.protocol import Client, DeviceError
from nupes_edge.quant.driver import quantize_graph
from nupes_edge.quant.reconstruct import ReconConfig
from nupes_edge.verify import verify_device

from .faultproxy import FaultyProxy

pytestmark = pytest.mark.skipif(shutil.which("qemu-system-arm") is None or shutil.which("arm-none-eabi-gcc") is None,
                                reason="make setup installs qemu-system-arm and arm-none-eabi-gcc")
N = 60
_cache = {}


def built(name, method, bits, tmp_path_factory, board="stm32"):
    key = (name, method, bits, board)
    if key not in _cache:
        qkey = (name, method, bits)
        if qkey not in _cache:
            g = import_module(examples.model(name, progress=False), examples.models.example_input(name), name)
            _cache[qkey] = quantize_graph(g, examples.load(name, "calib")[0], method, bits, name=name,
                                          recon=ReconConfig(iters=100, batch=32))
        qm = _cache[qkey]
        fb = firmware.build_firmware(qm, boards.get(board), str(tmp_path_factory.mktemp("fw")))
        _cache[key] = (qm, fb)
    return _cache[key]


def verify_on_qemu(qm, fb, n=N, url_wrapper=None, timeout=5.0, retries=5):
    x, y = examples.load(qm.meta["name"], "test")
    with start_qemu(fb.board, fb.elf, max_seconds=600) as q:
        url = url_wrapper(q.port) if url_wrapper else q.url
        with Client(url, timeout=timeout, retries=retries) as c:
            banner = c.wait_banner(5.0)
            assert banner or url_wrapper is not None  # a faulty link may garble the banner itself
            return verify_device(qm, c, x[:n], y[:n], profile=True)


@pytest.mark.parametrize("name", examples.NAMES)
@pytest.mark.parametrize("method,bits", [("nupes", 4), ("uniform", 8)])
def test_board_is_bit_exact_with_the_reference(name, method, bits, tmp_path_factory):
    qm, fb = built(name, method, bits, tmp_path_factory)
    r = verify_on_qemu(qm, fb)
    assert r.n == N and r.mismatches == 0, r.first_diffs
    assert r.count_kind == "emulated_instructions" and r.count_min > 0
    assert len(r.profile) == len([n for n in qm.graph.nodes if n.op != "flatten"])
    # the per-layer counts account for (nearly) the whole inference
    assert 0.9 * r.count_min <= sum(p["count"] for p in r.profile) <= 1.01 * r.count_max


OTHER_CORES = [b for b in boards.all_boards() if b.emulated and b.name != "stm32f405"]
# mnist5k W4 (every kernel kind) on every core it fits; the M0's 16 KiB takes digits (W8 and W2). Every
# width of digits, mnist5k, IC and KWS runs on every core in benchmarks/speed.py --boards all.
CORE_CASES = [(b.name, "mnist5k", "nupes", 4) if b.ram_bytes >= 64 * 1024 else (b.name, "digits", "uniform", 8)
              for b in OTHER_CORES] + [(b.name, "digits", "nupes", 2) for b in OTHER_CORES if b.ram_bytes < 64 * 1024]


@pytest.mark.parametrize("board,name,method,bits", CORE_CASES)
def test_every_emulated_core_is_bit_exact_with_the_reference(board, name, method, bits, tmp_path_factory):
    """The same models on every other emulated core (mnist5k has every kernel kind: the first conv's
    window kernel, im2col, depthwise, 1x1, add, pools, dense; the Cortex-M0 takes digits, which has
    them all but the window kernel), each core's own kernel path."""
    qm, fb = built(name, method, bits, tmp_path_factory, board)
    r = verify_on_qemu(qm, fb, n=20)
    assert r.n == 20 and r.mismatches == 0, r.first_diffs
    assert r.board == fb.board.name and r.count_kind == "emulated_instructions" and r.count_min > 0


@pytest.mark.parametrize("name", examples.NAMES)
def test_a_flash_budget_model_is_bit_exact_on_the_board(name, tmp_path_factory):
    """Mixed widths in one model and adds without tables (a budget at the size of uniform W2, where
    the search buys wider layers with the add tables' bytes), on the emulated board."""
    from nupes_edge.codegen.plan import ADD_TABLE_BYTES
    from nupes_edge.quant import mixed

    g = import_module(examples.model(name, progress=False), examples.models.example_input(name), name)
    w2 = mixed.flash_costs(g, "nupes", {n.name: (2,) for n in g.weight_nodes()})
    budget = sum(c[2] for c in w2.values()) + ADD_TABLE_BYTES
    qm = quantize_graph(g, examples.load(name, "calib")[0], "nupes", 4, name=name, flash_budget=budget,
                        recon=ReconConfig(iters=100, batch=32))
    assert len({p.bits for p in qm.params.values() if hasattr(p, "bits")}) > 1
    assert qm.meta["flash_budget"]["table_free_adds"] == ["add"]
    fb = firmware.build_firmware(qm, boards.get("stm32"), str(tmp_path_factory.mktemp("fw")))
    r = verify_on_qemu(qm, fb)
    assert r.n == N and r.mismatches == 0, r.first_diffs


def test_instruction_counts_are_deterministic(tmp_path_factory):
    qm, fb = built("digits", "uniform", 8, tmp_path_factory)
    a = verify_on_qemu(qm, fb, n=10)
    b = verify_on_qemu(qm, fb, n=10)
    assert a.count_mean == b.count_mean and a.profile == b.profile


def test_firmware_for_another_model_is_refused(tmp_path_factory):
    qm_a, fb_a = built("digits", "uniform", 8, tmp_path_factory)
    qm_b, _ = built("digits", "nupes", 4, tmp_path_factory)
    with pytest.raises(NupesError, match="hash"):
        verify_on_qemu(qm_b, fb_a, n=2)


@pytest.mark.parametrize("seed", [1, 2])
def test_faulty_link_gives_a_correct_result_or_a_clear_error_never_a_false_pass(seed, tmp_path_factory):
    qm, fb = built("digits", "uniform", 8, tmp_path_factory)
    proxies = []

    def through_proxy(port):
        p = FaultyProxy(port, seed=seed)
        proxies.append(p)
        return f"socket://127.0.0.1:{p.port}"

    try:
        r = verify_on_qemu(qm, fb, n=40, url_wrapper=through_proxy, timeout=1.5, retries=8)
    except DeviceError as e:
        assert "no valid reply" in str(e) or "device reported" in str(e)
        return
    assert proxies[0].faults > 0, "the proxy injected no fault; raise the rates"
    assert r.mismatches == 0 and r.retries > 0


def test_one_percent_byte_corruption_both_ways_still_verifies_exactly(tmp_path_factory):
    """1% of the bytes corrupted in both directions (mnist5k: 784-byte inputs, 13 LOAD chunks
    each): the run completes with the same outputs and counts as a clean run, after retries."""
    qm, fb = built("mnist5k", "nupes", 4, tmp_path_factory)
    clean = verify_on_qemu(qm, fb, n=50, timeout=5.0, retries=30)
    proxies = []

    def noisy(port):
        proxies.append(FaultyProxy(port, p_corrupt=0.01, p_drop=0.0, p_stall=0.0, seed=11))
        return proxies[-1].url

    r = verify_on_qemu(qm, fb, n=50, url_wrapper=noisy, timeout=5.0, retries=30)
    assert proxies[0].faults > 100 and r.retries > 50
    assert r.mismatches == 0 and r.n == 50
    assert (r.count_min, r.count_max, r.count_mean, r.profile) == (clean.count_min, clean.count_max,
                                                                   clean.count_mean, clean.profile)


def test_corrupting_every_reply_fails_cleanly(tmp_path_factory):
    qm, fb = built("digits", "uniform", 8, tmp_path_factory)

    def hostile(port):
        return f"socket://127.0.0.1:{FaultyProxy(port, p_corrupt=0.05, seed=3).port}"

    with pytest.raises(DeviceError, match="no valid reply"):
        verify_on_qemu(qm, fb, n=5, url_wrapper=hostile, timeout=0.5, retries=2)
