"""Builds that race and builds that are interrupted, in one project folder.

    python benchmarks/concurrency.py [--trials 20] [--interrupts 10] [--example digits]

A project is made with `nupes-edge init` and quantized once. Then, per trial, two
`nupes-edge build --board stm32` start at the same moment in that folder: both must succeed (the
second waits for the first's lock) or one must refuse with a clear message (exit 2), and the
firmware left behind must be whole (its model.nq loads and matches the project's). Then
`--interrupts` builds get SIGINT (Ctrl-C) at a random moment: each must exit without a traceback
and leave no temporary or half-written file, the previous firmware folder intact or replaced
whole. Prints a table and exits 1 on any other outcome.
"""
from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from nupes_edge import artifact  # noqa: E402

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def cli(args, cwd, **kw):
    return subprocess.Popen([sys.executable, "-m", "nupes_edge", *args], cwd=cwd, env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kw)


def leftovers(root: str) -> list[str]:
    """Temporary or half-written files anywhere in the project."""
    bad = []
    for d, _, files in os.walk(root):
        for f in files + [os.path.basename(d)]:
            if ".tmp" in f or ".old-" in f:
                bad.append(os.path.join(d, f))
    return bad


def firmware_is_whole(root: str) -> bool:
    out = os.path.join(root, "build", "stm32")
    try:
        artifact.load(os.path.join(out, "model.nq"))
        return all(os.path.getsize(os.path.join(out, f)) > 0 for f in ("firmware.elf", "firmware.bin"))
    except Exception:  # noqa: BLE001 - any failure means the folder is not whole
        return False


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=20)
    ap.add_argument("--interrupts", type=int, default=10)
    ap.add_argument("--example", default="digits")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rnd = random.Random(args.seed)
    bad = 0
    with tempfile.TemporaryDirectory() as tmp:
        root = os.path.join(tmp, "proj")
        init = subprocess.run([sys.executable, "-m", "nupes_edge", "init", root, "--example", args.example,
                               "--method", "uniform", "--wbits", "8"], env=ENV, capture_output=True, text=True)
        assert init.returncode == 0, init.stderr
        first = cli(["build", "--board", "stm32"], root)
        _, err = first.communicate(timeout=600)
        assert first.returncode == 0, err
        counts = {"both built": 0, "one refused cleanly": 0, "other": 0}
        durations = []
        for i in range(args.trials):
            t0 = time.perf_counter()
            procs = [cli(["build", "--board", "stm32"], root) for _ in range(2)]
            outs = [p.communicate(timeout=900) for p in procs]
            durations.append(time.perf_counter() - t0)
            codes = sorted(p.returncode for p in procs)
            clean = not leftovers(root) and firmware_is_whole(root) and not any("Traceback" in e for _, e in outs)
            if codes == [0, 0] and clean:
                counts["both built"] += 1
            elif codes == [0, 2] and clean:
                counts["one refused cleanly"] += 1
            else:
                counts["other"] += 1
                print(f"trial {i}: exit codes {codes}; leftovers {leftovers(root)}; "
                      f"stderr {[e[-300:] for _, e in outs]}", file=sys.stderr)
            print(f"[concurrency] race {i + 1}/{args.trials}: exit codes {codes}", file=sys.stderr, flush=True)
        intr = {"interrupted, nothing half-written": 0, "finished before the signal": 0, "other": 0}
        mean = sum(durations) / max(len(durations), 1) / 2
        for i in range(args.interrupts):
            p = cli(["build", "--board", "stm32"], root, start_new_session=True)
            time.sleep(rnd.uniform(0.2, max(mean, 0.5)))
            p.send_signal(signal.SIGINT)
            _, err = p.communicate(timeout=600)
            clean = not leftovers(root) and firmware_is_whole(root) and "Traceback" not in err
            if p.returncode == 0 and clean:
                intr["finished before the signal"] += 1
            elif p.returncode != 0 and clean:
                intr["interrupted, nothing half-written"] += 1
            else:
                intr["other"] += 1
                print(f"interrupt {i}: exit {p.returncode}; leftovers {leftovers(root)}; {err[-300:]}", file=sys.stderr)
            print(f"[concurrency] interrupt {i + 1}/{args.interrupts}: exit {p.returncode}", file=sys.stderr, flush=True)
    print(f"| two builds at once in one project ({args.example}, stm32) | {args.trials} |")
    for k, v in counts.items():
        print(f"| {k} | {v} |")
    print(f"| one build, SIGINT at a random moment | {args.interrupts} |")
    for k, v in intr.items():
        print(f"| {k} | {v} |")
    bad = counts["other"] + intr["other"]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
