"""Link benchmark: `verify` on the emulated STM32 through a fault-injecting TCP proxy.

For each fault kind (corrupt / drop / dup, each byte with probability p, both directions; and
stalls) and rate, runs verify of N inputs of mnist5k and prints a table: PASS with results
identical to a clean run, a clean error (exit 2), or a FALSE result (never acceptable), with the
retries and time it took. Writes JSON rows.

    python benchmarks/link.py                 # 0.1 / 1 / 5 %, 5 runs of 50 inputs each (~10 min)
    python benchmarks/link.py --runs 1 --rates 0.01
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from nupes_edge import boards, examples, firmware  # noqa: E402
from nupes_edge.errors import NupesError  # noqa: E402
from nupes_edge.fileio import atomic_write_bytes  # noqa: E402
from nupes_edge.flash import start_qemu  # noqa: E402
from nupes_edge.importers import import_module  # noqa: E402
from nupes_edge.protocol import Client  # noqa: E402
from nupes_edge.quant.driver import quantize_graph  # noqa: E402
from nupes_edge.verify import verify_device  # noqa: E402
from tests.faultproxy import FaultyProxy  # noqa: E402


def verify(qm, fb, x, y, proxy_args=None, timeout=5.0):
    with start_qemu(fb.board, fb.elf, max_seconds=900) as q:
        url, proxy = q.url, None
        if proxy_args is not None:
            proxy = FaultyProxy(q.port, **proxy_args)
            url = proxy.url
        t0 = time.perf_counter()
        with Client(url, timeout=timeout) as c:
            c.wait_banner(5.0)
            r = verify_device(qm, c, x, y, profile=False, progress=False)
        return r, time.perf_counter() - t0, proxy.faults if proxy else 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rates", default="0.001,0.01,0.05")
    p.add_argument("--kinds", default="corrupt,drop,dup,stall")
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("-n", type=int, default=50)
    p.add_argument("--json", default=os.path.join(HERE, "results", "link.json"))
    args = p.parse_args()
    name = "mnist5k"
    g = import_module(examples.model(name), examples.models.example_input(name), name)
    qm = quantize_graph(g, examples.load(name, "calib")[0], "uniform", 8, name=name)
    fb = firmware.build_firmware(qm, boards.get("stm32"), os.path.join("build", "link-bench"))
    x, y = examples.load(name, "test")
    x, y = x[:args.n], y[:args.n]
    clean, seconds, _ = verify(qm, fb, x, y)
    key = lambda r: (r.mismatches, r.n, r.count_min, r.count_max, r.count_mean, r.device_top1)  # noqa: E731
    print(f"clean: {clean.n} inputs, {clean.mismatches} mismatches, {seconds:.1f} s", file=sys.stderr)
    rows = []
    for kind in args.kinds.split(","):
        for rate in [float(r) for r in args.rates.split(",")]:
            proxy_args = {"p_corrupt": 0.0, "p_drop": 0.0, "p_dup": 0.0, "p_stall": 0.0}
            if kind == "stall":
                proxy_args.update(p_stall=rate * 10, stall_s=(0.05, 0.5))
            else:
                proxy_args[f"p_{kind}"] = rate
            for run in range(args.runs):
                t0 = time.perf_counter()
                try:
                    r, secs, faults = verify(qm, fb, x, y, {**proxy_args, "seed": 100 * run + 7})
                    outcome = "PASS (= clean run)" if key(r) == key(clean) else "FALSE RESULT"
                    retries = r.retries
                except NupesError as e:  # DeviceError: the clean failure the CLI turns into exit 2
                    outcome, retries, faults, secs = f"clean error: {str(e)[:60]}", None, None, time.perf_counter() - t0
                rows.append({"kind": kind, "rate": rate, "run": run, "outcome": outcome, "retries": retries,
                             "faults": faults, "seconds": round(secs, 1)})
                print(f"[link] {kind} {rate:.1%} run {run}: {outcome}, retries {retries}, {secs:.1f} s",
                      file=sys.stderr, flush=True)
    atomic_write_bytes(args.json, (json.dumps(rows, indent=1) + "\n").encode())
    print("| fault | rate | runs | PASS (= clean) | clean error | false result | retries per run | s per run |\n"
          "|---|---:|---:|---:|---:|---:|---:|---:|")
    for kind in dict.fromkeys(r["kind"] for r in rows):
        for rate in dict.fromkeys(r["rate"] for r in rows if r["kind"] == kind):
            sub = [r for r in rows if r["kind"] == kind and r["rate"] == rate]
            ok = [r for r in sub if r["outcome"].startswith("PASS")]
            false = sum(r["outcome"] == "FALSE RESULT" for r in sub)
            retr = f"{sum(r['retries'] for r in ok) / len(ok):.0f}" if ok else "-"
            label = f"{rate * 10:.0%} of chunks" if kind == "stall" else f"{rate:.1%}"
            print(f"| {kind} | {label} | {len(sub)} | {len(ok)} | {len(sub) - len(ok) - false} | {false} | {retr} | "
                  f"{sum(r['seconds'] for r in sub) / len(sub):.1f} |")
    return 1 if any(r["outcome"] == "FALSE RESULT" for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
