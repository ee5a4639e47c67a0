"""How much the README's accuracy figures move with the CPU's vector instructions.

The float models ship with the package, so the float column is the same everywhere; quantization
(calibration, bias correction, reconstruction) still runs float PyTorch, whose x86 kernels are
chosen at run time by the CPU: AVX-512, AVX2 or plain SSE builds of the same operators sum in
different orders. This runs `benchmarks/accuracy.py` once per instruction level on this machine,
forcing PyTorch's dispatch (ATEN_CPU_CAPABILITY) and oneDNN's (ONEDNN_MAX_CPU_ISA) down to what an
older or smaller CPU would pick, and reports the largest difference of each figure against the
native run. It cannot stand in for every CPU (other compilers' builds, other libm), but it covers
the mechanism that made the figures differ between an Intel and an AMD machine.

    python benchmarks/cpu_variation.py                    # ~10 min: 3 runs of accuracy.py
    python benchmarks/cpu_variation.py --update-readme    # the README's <!-- cpu-variation --> block
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

import readme_block  # noqa: E402
from nupes_edge.fileio import atomic_write_bytes  # noqa: E402

# (label, environment): the machine's own choice first, then what a CPU without AVX-512 / AVX2 runs
LEVELS = [("native", {}),
          ("avx2", {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}),
          ("sse4.1", {"ATEN_CPU_CAPABILITY": "default", "ONEDNN_MAX_CPU_ISA": "SSE41"})]
FIGURES = [("float_top1", "float top-1", 100, "points"), ("int_top1", "int ref top-1", 100, "points"),
           ("agreement", "agreement", 100, "points"), ("sqnr_db", "SQNR", 1, "dB")]


def cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def run_level(label: str, env: dict, accuracy_args: list[str], tmp: str) -> list[dict]:
    out = os.path.join(tmp, f"{label}.json")
    cmd = [sys.executable, os.path.join(HERE, "accuracy.py"), "--json", out, "--plot", os.path.join(tmp, f"{label}.png"),
           *accuracy_args]
    print(f"[cpu] {label}: {' '.join(f'{k}={v}' for k, v in env.items()) or '(as detected)'}", file=sys.stderr, flush=True)
    full_env = {**os.environ, **env}
    for k in ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA"):
        if k not in env:
            full_env.pop(k, None)
    probe = subprocess.run([sys.executable, "-c", "import torch; print(torch.backends.cpu.get_cpu_capability())"],
                           env=full_env, capture_output=True, text=True, check=True).stdout.strip()
    subprocess.run(cmd, env=full_env, check=True, stdout=subprocess.DEVNULL)
    rows = json.load(open(out))
    for r in rows:
        r["torch_capability"] = probe
    return rows


def compare(levels: dict[str, list[dict]]) -> list[dict]:
    """Per level other than native: the largest |difference| of each figure over all rows, and where."""
    key = lambda r: (r["example"], r["wbits"], r["method"])  # noqa: E731
    native = {key(r): r for r in levels["native"]}
    out = []
    for label, rows in levels.items():
        if label == "native":
            continue
        entry = {"level": label, "torch_capability": rows[0]["torch_capability"] if rows else "?",
                 "rows": len(rows), "rows_identical": 0}
        for field, _, scale, _ in FIGURES:
            worst, where = 0.0, None
            for r in rows:
                d = abs(r[field] - native[key(r)][field]) * scale
                if d > worst:
                    worst, where = d, key(r)
            entry[f"max_diff_{field}"] = round(worst, 2)
            entry[f"where_{field}"] = list(where) if where else None
        # the integer model's decisions: SQNR, a float, moves in its last digits on any change
        entry["rows_identical"] = sum(all(r[f] == native[key(r)][f] for f in ("int_top1", "agreement")) for r in rows)
        out.append(entry)
    return out


def markdown(summary: list[dict], cpu: str, native_cap: str) -> str:
    head = ("| forced level (torch dispatch) | rows with the same top-1 and agreement | " +
            " | ".join(f"max Δ {name} ({unit})" for _, name, _, unit in FIGURES) + " |\n")
    head += "|---|---:|" + "---:|" * len(FIGURES) + "\n"
    body = ""
    for e in summary:
        cells = []
        for field, _, _, _ in FIGURES:
            w = e[f"where_{field}"]
            cells.append(f"{e[f'max_diff_{field}']:g}" + (f" ({w[0]} W{w[1]} {w[2]})" if w else ""))
        body += f"| {e['level']} ({e['torch_capability']}) | {e['rows_identical']}/{e['rows']} | " + " | ".join(cells) + " |\n"
    return f"Against the native run on {cpu} (torch dispatch {native_cap}):\n\n" + head + body


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--accuracy-args", default="", help="extra arguments for accuracy.py, e.g. '--example digits'")
    p.add_argument("--json", default=os.path.join(HERE, "results", "cpu_variation.json"))
    p.add_argument("--update-readme", action="store_true")
    p.add_argument("--from-json", action="store_true", help="re-render from --json's levels, measure nothing")
    args = p.parse_args()
    extra = args.accuracy_args.split()
    if args.from_json:
        levels = json.load(open(args.json))["levels"]
    else:
        with tempfile.TemporaryDirectory() as tmp:
            levels = {label: run_level(label, env, extra, tmp) for label, env in LEVELS}
    summary = compare(levels)
    cpu = json.load(open(args.json))["cpu"] if args.from_json else cpu_name()
    native_cap = levels["native"][0]["torch_capability"] if levels["native"] else "?"
    record = {"cpu": cpu, "native_capability": native_cap, "summary": summary, "levels": levels}
    atomic_write_bytes(args.json, (json.dumps(record, indent=1) + "\n").encode())
    md = markdown(summary, cpu, native_cap)
    print(md)
    if args.update_readme:
        cmd = "python benchmarks/cpu_variation.py" + (f" --accuracy-args '{args.accuracy_args}'" if extra else "")
        readme_block.replace("cpu-variation", f"Measured with `{cmd}`. {md}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
