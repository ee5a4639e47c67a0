"""Mixed precision benchmark: test-split accuracy against model flash, per bundled example.

Three families of models, each one's flash counted exactly as `codegen --json` counts it
(weights + tables + bias and requantization):
  * the same weight bits in every layer, 2..8, with `nupes` and with `uniform` (min-max);
  * `--flash-budget` (nupes) at the flash of each all-W2..W8 nupes model and half-way between.
Prints a table, writes JSON rows and a plot of accuracy against flash with the Pareto front.
With --update-readme the README's mixed-precision table is replaced by this run's.

    python benchmarks/mixed_precision.py                     # both examples (~10 min on one thread)
    python benchmarks/mixed_precision.py --example digits
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

from nupes_edge import examples  # noqa: E402
from nupes_edge.codegen.plan import plan  # noqa: E402
from nupes_edge.evaluate import evaluate  # noqa: E402
import readme_block  # noqa: E402
from nupes_edge.fileio import atomic_write_bytes  # noqa: E402
from nupes_edge.importers import import_module  # noqa: E402
from nupes_edge.quant.driver import quantize_graph  # noqa: E402

BITS = range(2, 9)


def model_flash(qm) -> int:
    r = plan(qm).report
    return r["flash_weights_bytes"] + r["flash_tables_bytes"] + r["flash_meta_bytes"]


def measure(name, graph, x_cal, x, y, method, wbits=None, budget=None) -> dict:
    label = f"W{wbits} {method}" if budget is None else f"--flash-budget {budget} ({method})"
    print(f"[bench] {name} {label} ...", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    qm = quantize_graph(graph, x_cal, method, wbits or 4, name=name, flash_budget=budget)
    seconds = time.perf_counter() - t0
    r = evaluate(qm, x, y)
    fb = qm.meta.get("flash_budget", {})
    row = {"example": name, "family": "uniform bits" if budget is None else "flash budget", "method": method,
           "wbits": wbits, "budget": budget, "flash": model_flash(qm), "int_top1": r.int_top1,
           "float_top1": r.float_top1, "seconds": round(seconds, 2), "search_seconds": round(fb.get("seconds", 0.0), 2),
           "bits": {n: p.bits for n, p in qm.params.items() if hasattr(p, "bits")},
           "table_free_adds": fb.get("table_free_adds", [])}
    print(f"[bench]   flash {row['flash']} B, top-1 {row['int_top1']:.2%}, {seconds:.1f} s", file=sys.stderr, flush=True)
    return row


def run(names) -> list[dict]:
    rows = []
    for name in names:
        graph = import_module(examples.model(name), examples.models.example_input(name), name)
        x_cal, _ = examples.load(name, "calib")
        x, y = examples.load(name, "test")
        for method in ("nupes", "uniform"):
            rows += [measure(name, graph, x_cal, x, y, method, wbits=b) for b in BITS]
        sizes = sorted({r["flash"] for r in rows if r["example"] == name and r["method"] == "nupes"})
        budgets = sorted(set(sizes) | {(a + b) // 2 for a, b in zip(sizes, sizes[1:])})
        rows += [measure(name, graph, x_cal, x, y, "nupes", budget=b) for b in budgets]
    return rows


def _bits(row) -> str:
    return "/".join(str(b) for b in row["bits"].values()) + (" +computed add" if row["table_free_adds"] else "")


def markdown(rows) -> str:
    out = []
    for name in dict.fromkeys(r["example"] for r in rows):
        sub = [r for r in rows if r["example"] == name]
        uni = {(r["method"], r["wbits"]): r for r in sub if r["family"] == "uniform bits"}
        fb = {r["budget"]: r for r in sub if r["family"] == "flash budget"}
        out.append(f"**{name}** (test split, {len(examples.load(name, 'test')[1])} images; float "
                   f"{sub[0]['float_top1']:.2%}; bits per layer in execution order)\n\n"
                   "| flash budget B | nupes, same bits everywhere | uniform, same bits (its own flash) | "
                   "`--flash-budget` nupes | its bits per layer |\n|---:|---|---|---:|---|\n")
        for budget, r in sorted(fb.items()):
            same = next((u for (m, b), u in uni.items() if m == "nupes" and u["flash"] == budget), None)
            u = uni.get(("uniform", same["wbits"])) if same else None
            same_text = "W{}: {:.2%}".format(same["wbits"], same["int_top1"]) if same else "(between)"
            u_text = "W{}: {:.2%} ({:,} B)".format(u["wbits"], u["int_top1"], u["flash"]) if u else ""
            out.append(f"| {budget:,} | {same_text} | {u_text} | **{r['int_top1']:.2%}** | {_bits(r)} |\n")
        out.append("\n")
    search = [r for r in rows if r["family"] == "flash budget" and r["search_seconds"] > 0]
    for name in dict.fromkeys(r["example"] for r in search):
        s = [r for r in search if r["example"] == name]
        base = [r["seconds"] for r in rows if r["example"] == name and r["family"] == "uniform bits" and r["method"] == "nupes"]
        out.append(f"{name}: the search (sensitivities and allocation) took {min(r['search_seconds'] for r in s):.1f}-"
                   f"{max(r['search_seconds'] for r in s):.1f} s; one nupes run {min(base):.1f}-{max(base):.1f} s.\n")
    return "".join(out)


def pareto(points):
    """The points no other point beats on both flash (smaller) and accuracy (higher)."""
    front, best = [], -1.0
    for f, a in sorted(points, key=lambda p: (p[0], -p[1])):
        if a > best:
            front.append((f, a))
            best = a
    return front


def plot(rows, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(dict.fromkeys(r["example"] for r in rows))
    fig, axes = plt.subplots(1, len(names), figsize=(6 * len(names), 4.2), squeeze=False)
    for ax, name in zip(axes[0], names):
        sub = [r for r in rows if r["example"] == name]
        series = [("nupes, same bits", lambda r: r["family"] == "uniform bits" and r["method"] == "nupes", "o"),
                  ("uniform, same bits", lambda r: r["family"] == "uniform bits" and r["method"] == "uniform", "s"),
                  ("--flash-budget (nupes)", lambda r: r["family"] == "flash budget", "^")]
        for label, keep, marker in series:
            pts = sorted((r["flash"] / 1024, 100 * r["int_top1"]) for r in sub if keep(r))
            ax.plot(*zip(*pts), marker=marker, label=label, alpha=0.85)
        for r in sub:
            if r["family"] == "uniform bits" and r["method"] == "nupes":
                ax.annotate(f"W{r['wbits']}", (r["flash"] / 1024, 100 * r["int_top1"]), fontsize=7,
                            textcoords="offset points", xytext=(3, -9))
        front = pareto([(r["flash"] / 1024, 100 * r["int_top1"]) for r in sub])
        ax.step(*zip(*front), where="post", color="k", lw=0.8, ls=":", label="Pareto front (all points)")
        ax.axhline(100 * sub[0]["float_top1"], color="k", ls="--", lw=1, label="float")
        lo = min(100 * r["int_top1"] for r in sub if r["method"] == "nupes")
        ax.set_ylim(max(lo - 3, 0), 100.5)
        ax.set(title=f"{name}: accuracy vs model flash", xlabel="model flash (KiB, as codegen counts it)",
               ylabel="integer-model top-1 (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def update_readme(md: str, command: str) -> None:
    readme_block.replace("mixed", f"Measured with `{command}` (one thread):\n\n{md}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--example", default=",".join(examples.NAMES))
    p.add_argument("--json", default=os.path.join(HERE, "results", "mixed_precision.json"))
    p.add_argument("--plot", default=os.path.join(HERE, "results", "mixed_precision.png"))
    p.add_argument("--update-readme", action="store_true")
    p.add_argument("--from-json", action="store_true", help="re-render the table and plot from --json, measure nothing")
    args = p.parse_args()
    torch.set_num_threads(1)
    if args.from_json:
        rows = json.load(open(args.json))
    else:
        rows = run(args.example.split(","))
        atomic_write_bytes(args.json, (json.dumps(rows, indent=1) + "\n").encode())
    plot(rows, args.plot)
    md = markdown(rows)
    print(md)
    if args.update_readme:
        flags = [a for a in sys.argv[1:] if a not in ("--update-readme", "--from-json")]
        update_readme(md, "python " + " ".join(["benchmarks/mixed_precision.py"] + flags))
    return 0


if __name__ == "__main__":
    sys.exit(main())
