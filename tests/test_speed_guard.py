"""Emulated instruction counts are deterministic (QEMU -icount), so a kernel change that makes a
bundled model slower is caught here: a count may not rise more than 2% over the figure recorded in
benchmarks/results/speed_guard.json (updated on purpose with `benchmarks/speed.py --update-guard`,
in the commit of the kernel change that earns it). Correctness is checked too: 0 mismatches."""
import json
import os
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "benchmarks"))
GUARD = json.load(open(os.path.join(HERE, "..", "benchmarks", "results", "speed_guard.json")))


@pytest.mark.parametrize("key", ["mnist5k:uniform:8", "digits:uniform:8", "digits:uniform:8@mps3-an547",
                                 "digits:nupes:4:int8@mps3-an547"])
def test_emulated_count_does_not_rise(key):
    """The STM32 (DSP kernels) and the Cortex-M55 (Helium kernels, 4-bit codes with int8 levels)."""
    from speed import measure

    config, _, board = key.partition("@")
    name, method, bits, *levels = config.split(":")
    print(f"\n[speed guard] {key} on the emulated {board or 'STM32'} ...", file=sys.stderr)
    r = measure(name, method, int(bits), n=3, board=board or "stm32", levels=8 if levels == ["int8"] else 16)
    assert r is not None
    assert r["total"] <= GUARD[key] * 1.02, f"{key}: {r['total']:,} instructions, recorded {GUARD[key]:,}"
