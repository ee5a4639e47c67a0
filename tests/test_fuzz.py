"""A short fixed-seed run of benchmarks/fuzz.py: mutated .nq / .tflite / .npz files are loaded or
refused with a NupesError, never another exception, within bounded time and memory; the loaded
model files also build under ASan + UBSan and agree with the integer reference (the full
10,000-file run: docs/reliability.md)."""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "benchmarks"))


def test_mutated_files_are_loaded_or_refused_cleanly():
    from fuzz import campaign

    res = campaign(70, seed=1, progress=False, build=3)  # 70 cases of each of the 6 file kinds
    crashes = res.pop("_crashes")
    slowest = res.pop("_slowest_s")
    peak_mb = res.pop("_peak_mb")
    stray = res.pop("_warnings")
    res.pop("_peak_case")
    assert not crashes, crashes
    assert not stray, stray
    assert sum(c for (kind, out), c in res.items() if out == "refused") > 200  # the mutations do bite
    assert res[("nq built+run", "exact")] == 3
    assert slowest < 5 and peak_mb < 256
