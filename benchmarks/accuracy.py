"""Accuracy benchmark: every bundled example × weight bits × method, on the held-out test split.

Prints a table, writes JSON rows (example, method, wbits, float_top1, int_top1, agreement,
sqnr_db, seconds, ...) and a plot of integer-model accuracy against bits per method.
With --update-readme the README's results table is replaced by this run's table.

    python benchmarks/accuracy.py                       # everything (~10 min on one thread)
    python benchmarks/accuracy.py --example mnist5k --method nupes,uniform --wbits 4
    python benchmarks/accuracy.py --method nupes,powerquant --wbits 3,4 --levels int8 \
        --json benchmarks/results/accuracy_int8_levels.json --plot benchmarks/results/accuracy_int8_levels.png
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

import readme_block  # noqa: E402
from nupes_edge import examples  # noqa: E402
from nupes_edge.evaluate import evaluate  # noqa: E402
from nupes_edge.fileio import atomic_write_bytes  # noqa: E402
from nupes_edge.importers import import_module  # noqa: E402
from nupes_edge.quant import METHODS  # noqa: E402
from nupes_edge.quant.driver import quantize_graph  # noqa: E402
from nupes_edge.report import ACCURACY_COLUMNS, table  # noqa: E402



def run(example_names, methods, wbits_list, levels=16):
    rows = []
    for name in example_names:
        net = examples.model(name)
        graph = import_module(net, examples.models.example_input(name), name)
        x_cal, _ = examples.load(name, "calib")
        x, y = examples.load(name, "test")
        for wbits in wbits_list:
            for method in methods:
                print(f"[bench] {name} W{wbits} {method} ...", file=sys.stderr, flush=True)
                t0 = time.perf_counter()
                qm = quantize_graph(graph, x_cal, method, wbits, name=name, levels=levels)
                seconds = time.perf_counter() - t0
                r = evaluate(qm, x, y)
                rows.append({"example": name, "method": method, "wbits": wbits, "levels": levels,
                             "seconds": round(seconds, 2),
                             "n_test": r.n, **{k: v for k, v in r.as_dict().items() if k != "n"}})
                print(table(rows[-1:], ACCURACY_COLUMNS).splitlines()[-1], file=sys.stderr, flush=True)
    return rows


def markdown(rows) -> str:
    head = "| example | W | method | float | int ref | fake-quant | agreement | SQNR dB | quantize s |\n"
    head += "|---|---:|---|---:|---:|---:|---:|---:|---:|\n"
    body = "".join(f"| {r['example']} | {r['wbits']} | {r['method']} | {r['float_top1']:.2%} | **{r['int_top1']:.2%}** | "
                   f"{r['fakequant_top1']:.2%} | {r['agreement']:.2%} | {r['sqnr_db']:.1f} | {r['seconds']:.1f} |\n"
                   for r in rows)
    return head + body


def plot(rows, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = sorted({r["example"] for r in rows})
    fig, axes = plt.subplots(1, len(names), figsize=(5.5 * len(names), 4), squeeze=False)
    for ax, name in zip(axes[0], names):
        sub = [r for r in rows if r["example"] == name]
        for method in dict.fromkeys(r["method"] for r in sub):
            pts = sorted((r["wbits"], 100 * r["int_top1"]) for r in sub if r["method"] == method)
            ax.plot(*zip(*pts), marker="o", label=method)
        ax.axhline(100 * sub[0]["float_top1"], color="k", ls="--", lw=1, label="float")
        ax.set(title=f"{name} (test split, A8)", xlabel="weight bits", ylabel="integer-model top-1 (%)")
        ax.set_xticks(sorted({r["wbits"] for r in sub}))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def update_readme(md: str, command: str) -> None:
    readme_block.replace("accuracy", f"Measured with `{command}` (one thread):\n\n{md}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--example", default=",".join(examples.NAMES))
    p.add_argument("--method", default=",".join(METHODS))
    p.add_argument("--wbits", default="2,3,4,8")
    p.add_argument("--json", default=os.path.join(HERE, "results", "accuracy.json"))
    p.add_argument("--plot", default=os.path.join(HERE, "results", "accuracy.png"))
    p.add_argument("--levels", choices=("int16", "int8"), default="int16",
                   help="quantize --levels (int8: Helium's weight levels; with --update-readme refused, the README "
                        "table is int16's)")
    p.add_argument("--update-readme", action="store_true")
    p.add_argument("--from-json", action="store_true", help="re-render the table and plot from --json, measure nothing")
    args = p.parse_args()
    if args.levels == "int8" and args.update_readme:
        p.error("--levels int8 does not rewrite the README's table (it is the default int16 levels')")
    torch.set_num_threads(1)
    if args.from_json:
        rows = json.load(open(args.json))
    else:
        rows = run(args.example.split(","), args.method.split(","), [int(b) for b in args.wbits.split(",")],
                   16 if args.levels == "int16" else 8)
        atomic_write_bytes(args.json, (json.dumps(rows, indent=1) + "\n").encode())
    plot(rows, args.plot)
    md = markdown(rows)
    print(md)
    if args.update_readme:
        flags = [a for a in sys.argv[1:] if a not in ("--update-readme", "--from-json")]
        update_readme(md, "python " + " ".join(["benchmarks/accuracy.py"] + flags))
    return 0


if __name__ == "__main__":
    sys.exit(main())
