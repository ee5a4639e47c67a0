"""RAM of each model under each arena plan, beside TFLite Micro's arena, with the time each costs.

    python benchmarks/memory.py [--update-readme]

Models: the bundled digits and mnist5k (uniform W8, nupes W4), MLPerf Tiny's kept int8 IC and KWS
files and MLCommons' resnet_large (../shared/models; said on stderr and skipped when absent), and
MobileNetV2 0.35 at 96x96 and 128x128 with random weights (benchmarks/mobilenet_v2.py: the shape of
a mobile network; RAM and instructions do not depend on the weights).
Plans (codegen/plan.py), in the order --ram-budget tries them: "fastest" (every tensor in its own
place unless lifetimes allow sharing), "in place" (convolutions and elementwise ops written over
inputs that die there, the kernels' scratch inside the arena), then "tiled, N bands" (also runs of
layers computed N bands of rows at a time, residual blocks written back over their input); a plan
no smaller than the one before is left out. Each plan is built for the emulated STM32F405 and run
there on 3 random inputs (0 mismatches required): arena + scratch, the firmware's RAM, emulated
instructions per inference. TFLM's arena is from
../shared/notes/anchor-tflm.md (benchmarks/data/tflm_cmsis_nn.json). Writes
benchmarks/results/memory.json; --update-readme rewrites the README's memory block.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

from nupes_edge import api, artifact, examples  # noqa: E402
import readme_block  # noqa: E402
from nupes_edge.codegen.plan import BAND_LEVELS, plan  # noqa: E402
from nupes_edge.fileio import atomic_write_bytes  # noqa: E402
from nupes_edge.importers import import_module, import_tflite  # noqa: E402
from nupes_edge.quant.driver import quantize_graph  # noqa: E402

SHARED = os.path.abspath(os.path.join(ROOT, "..", "shared", "models"))
TFLM = json.load(open(os.path.join(HERE, "data", "tflm_cmsis_nn.json")))
TFLM_ARENA = {"digits": 5908, "mnist5k": 18516, "ic": 54996, "kws": 22820}  # anchor-tflm.md, arena_used_bytes()
RESULTS = os.path.join(HERE, "results", "memory.json")


def models():
    for name in ("digits", "mnist5k"):
        g = import_module(examples.model(name, progress=False), examples.models.example_input(name), name)
        for method, bits in (("uniform", 8), ("nupes", 4)):
            yield name, f"{method} W{bits}", quantize_graph(g, examples.load(name, "calib")[0], method, bits, name=name)
    for key, rel in (("ic", "mlperf-tiny/pretrainedResnet_quant.tflite"), ("kws", "mlperf-tiny/kws_ref_model.tflite"),
                     ("resnet_large", "zoo/mlc_resnet_large_int8.tflite")):
        path = os.path.join(SHARED, rel)
        if not os.path.isfile(path):
            print(f"[memory] {path} is absent: skipped", file=sys.stderr)
            continue
        yield key, "kept int8", quantize_graph(import_tflite(path), None, "uniform", 8, name=key)
    import torch

    from mobilenet_v2 import mobilenet_v2

    torch.set_num_threads(1)
    for res in (96, 128):  # random weights: RAM and instructions only (benchmarks/mobilenet_v2.py)
        x = torch.randn(16, 3, res, res, generator=torch.Generator().manual_seed(1))
        g = import_module(mobilenet_v2(0.35), x[:1], "mbv2")
        yield f"mobilenetv2-0.35 {res}x{res}", "uniform W8", quantize_graph(g, x.numpy(), "uniform", 8, name="mbv2")


def _label(bands) -> str:
    if bands is None:
        return "fastest"
    if bands == 0:
        return "in place"
    return "tiled, 1 row per band" if bands >= 1 << 20 else f"tiled, {bands} bands"


def measure(name: str, label: str, qm) -> list[dict]:
    rows, seen = [], None
    for bands in (None, *BAND_LEVELS):
        p = plan(qm) if bands is None else plan(qm, inplace=True, max_bands=bands)
        need = p.arena_bytes + 2 * p.scratch_entries
        if seen is not None and need >= seen:
            continue  # no smaller than a plan before it: --ram-budget would never pick it
        seen = need
        row = {"model": name, "weights": label, "plan": _label(bands),
               "arena": p.arena_bytes, "scratch": 2 * p.scratch_entries, "inplace_steps": len(p.inplace),
               "tiled": [chain for chain, _, _ in p.tiled.values()]}
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "m.nq")
            artifact.save(qm, path)
            try:
                fb, rep = api.run_emulated(path, "stm32", os.path.join(d, "out"), "random", 3, progress=False,
                                           ram_budget=None if bands is None else need)
                if rep.mismatches:
                    raise RuntimeError(f"{name} {label} {row['plan']}: {rep.mismatches} mismatches on the board")
                if bands is not None and fb.sizes["arena_bytes"] != p.arena_bytes:  # the plan asked for
                    raise RuntimeError(f"{name} {label} {row['plan']}: built {fb.sizes['ram_plan']}")
                row.update(ram_used=fb.sizes["ram_used"], instructions=round(rep.count_mean),
                           ram_plan=fb.sizes["ram_plan"], stack_used=rep.stack_used)
            except Exception as e:  # the fastest plan of a model too large for the board: said in the table
                row.update(error=str(e).splitlines()[0][:160])
        print(f"[memory] {row}", file=sys.stderr, flush=True)
        rows.append(row)
    return rows


def markdown(rows: list[dict]) -> str:
    md = ("| model | weights | plan | arena + scratch B | vs TFLM arena | stack B (measured) | firmware RAM B | "
          "instructions | vs fastest |\n|---|---|---|---:|---:|---:|---:|---:|---:|\n")
    fastest = {}
    for r in rows:
        t = TFLM_ARENA.get(r["model"])
        total = r["arena"] + r["scratch"]
        ratio = f"{total / t:.2f}x of {t:,}" if t else "-"
        key = (r["model"], r["weights"])
        if "error" in r:
            ram = instr = ("does not fit" if "overflowed" in r["error"] else r["error"][:40])
            if r["plan"] == "fastest" and "overflowed" in r["error"]:
                ram = "overflows"
            vs = "-"
        else:
            ram, instr = f"{r['ram_used']:,}", f"{r['instructions']:,}"
            if r["plan"] == "fastest" and r.get("ram_plan", "fastest") != "fastest":
                ram, instr = "overflows: built least-RAM", "-"
            if r["plan"] == "fastest" and instr != "-":
                fastest[key] = r["instructions"]
            vs = f"{r['instructions'] / fastest[key] - 1:+.1%}" if key in fastest and r["plan"] != "fastest" else "-"
        stack = f"{r['stack_used']:,}" if r.get("stack_used") else "-"
        md += (f"| {r['model']} | {r['weights']} | {r['plan']} | {r['arena']:,} + {r['scratch']:,} | {ratio} | "
               f"{stack} | {ram} | {instr} | {vs} |\n")
    return md


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--update-readme", action="store_true")
    args = ap.parse_args()
    rows = []
    for name, label, qm in models():
        rows += measure(name, label, qm)
    md = markdown(rows)
    print(md)
    os.makedirs(os.path.dirname(RESULTS), exist_ok=True)
    atomic_write_bytes(RESULTS, json.dumps(rows, indent=1).encode())
    if args.update_readme:
        readme_block.replace("memory", "Measured with `python benchmarks/memory.py --update-readme` (QEMU "
                             "netduinoplus2, 3 random inputs per row, every run bit-exact on the board):\n\n" + md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
