"""Emulated instructions per inference on the emulated STM32F405, per layer, beside TFLite Micro +
CMSIS-NN on the same emulator (benchmarks/data/tflm_cmsis_nn.json, with its source).

    python benchmarks/speed.py [--configs uniform:8,nupes:4,nupes:2] [--models digits,mnist5k,ic,kws]
                               [--update-readme] [--update-guard]
    python benchmarks/speed.py --boards all [--update-readme]   # every emulated core (README per-core table)

Each model goes through quantize -> build --board stm32 -> QEMU -> verify (0 mismatches required)
with per-layer profiling. The MLPerf Tiny models (ic, kws) are read from
../shared/models/mlperf-tiny/ (their float files) and calibrated on synthetic N(0, 1) inputs: their
test data is not available offline, and instruction counts do not depend on the data beyond a few
clamps. Their nupes runs use a short reconstruction (40 iterations) for the same reason.
Writes benchmarks/results/speed.json; --update-readme rewrites the README's speed table,
--update-guard the figures tests/test_speed_guard.py holds the kernels to.
"""
from __future__ import annotations

import argparse
import json
import re
import os
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

from nupes_edge import api, artifact, examples  # noqa: E402
import readme_block  # noqa: E402
from nupes_edge.fileio import atomic_write_bytes  # noqa: E402
from nupes_edge.importers import import_module, import_tflite  # noqa: E402
from nupes_edge.quant.driver import quantize_graph  # noqa: E402
from nupes_edge.quant.reconstruct import ReconConfig  # noqa: E402

RESULTS = os.path.join(HERE, "results")
TFLM = json.load(open(os.path.join(HERE, "data", "tflm_cmsis_nn.json")))
MLPERF_DIR = os.path.join(ROOT, "..", "shared", "models", "mlperf-tiny")
MLPERF = {"ic": "pretrainedResnet.tflite", "kws": "kws_ref_model_float32.tflite"}


def _quantized(model: str, method: str, bits: int, levels: int = 16):
    """(quantized model, .npz of inputs for verify or None for the bundled test split)."""
    if model in MLPERF:
        path = os.path.join(MLPERF_DIR, MLPERF[model])
        if not os.path.isfile(path):
            return None, None
        g = import_tflite(path)
        x = np.random.default_rng(0).normal(0, 1, (64,) + tuple(g.input_shape)).astype(np.float32)
        return quantize_graph(g, x, method, bits, name=model, recon=ReconConfig(iters=40, batch=16),
                              levels=levels), x[:3]
    g = import_module(examples.model(model, progress=False), examples.models.example_input(model), model)
    return quantize_graph(g, examples.load(model, "calib")[0], method, bits, name=model, levels=levels), None


def parse_config(cfg: str) -> tuple[str, int, int]:
    """'nupes:4' or 'nupes:4:int8' (quantize --levels int8) -> (method, bits, level bits)."""
    parts = cfg.split(":")
    levels = {"int16": 16, "int8": 8}[parts[2]] if len(parts) > 2 else 16
    return parts[0], int(parts[1]), levels


def guard_key(model: str, method: str, bits: int, levels: int = 16, board: str = "stm32f405") -> str:
    """speed_guard.json's key: model:method:bits (the STM32), then :int8 and @board where they differ."""
    return f"{model}:{method}:{bits}" + (":int8" if levels == 8 else "") + ("" if board == "stm32f405" else f"@{board}")


def config_name(method: str, bits: int, levels: int = 16) -> str:
    return f"{method} W{bits}" + (" int8 levels" if levels == 8 else "")


def measure(model: str, method: str, bits: int, n: int = 5, board: str = "stm32", quantized=None,
            levels: int = 16) -> dict | None:
    """Build and run one configuration on an emulated board; None if the model file is absent."""
    qm, x = quantized or _quantized(model, method, bits, levels)
    if qm is None:
        return None
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "m.nq")
        artifact.save(qm, path)
        data = None
        if x is not None:
            data = os.path.join(d, "x.npz")
            # as the model's source takes its data (a .tflite model: N x H x W x C)
            xs = x.transpose(0, 2, 3, 1) if qm.graph.input_layout == "NHWC" and x.ndim == 4 else x
            np.savez(data, x=xs, y=np.zeros(len(x), np.int64))
        fb, r = api.run_emulated(path, board, os.path.join(d, "out"), data, n if x is None else len(x),
                                 profile=True, progress=False)
    if r.mismatches:
        raise RuntimeError(f"{model} {method} W{bits}: {r.mismatches} mismatches on the board")
    return {"model": model, "method": method, "wbits": bits, "levels": levels, "board": fb.board.name,
            "total": round(r.count_mean),
            "flash": fb.sizes["flash_used"], "ram": fb.sizes["ram_used"],
            "arena": fb.sizes["arena_bytes"], "scratch": fb.sizes["scratch_bytes"],
            "layers": [{"layer": p["layer"], "op": p["op"], "count": p["count"]} for p in r.profile]}


def per_layer_text(r: dict) -> str:
    tl = TFLM["layers"].get(r["model"], {})
    out = [f"\n{r['model']} {r['method']} W{r['wbits']}: {r['total']:,} emulated instructions",
           f"  {'layer':<22} {'kernel':<30} {'nupes-edge':>12} {'TFLM':>10} {'ratio':>6}"]
    for p in r["layers"]:
        t = tl.get(p["layer"])
        ratio = f"{p['count'] / t:.2f}" if t else "-"
        out.append(f"  {p['layer']:<22} {p['op']:<30} {p['count']:>12,} {t if t else '-':>10} {ratio:>6}")
    return "\n".join(out)


def summary_markdown(rows: list[dict]) -> str:
    md = ("| model | weights | instructions | TFLM + CMSIS-NN | ratio | flash B (TFLM) | arena + scratch B |\n"
          "|---|---|---:|---:|---:|---:|---:|\n")
    for r in rows:
        t = TFLM["models"].get(r["model"], {})
        ratio = f"{r['total'] / t['total']:.2f}" if t.get("total") else "-"
        md += (f"| {r['model']} | {r['method']} W{r['wbits']} | {r['total']:,} | {t.get('total', 0):,} | {ratio} | "
               f"{r['flash']:,} ({t.get('flash', 0):,}) | {r['arena']:,} + {r['scratch']:,} |\n")
    return md


def helium(board: str) -> bool:
    """A board whose core has Helium (MVE): int8 levels change its kernels (boards/: Board.helium)."""
    from nupes_edge import boards as board_defs

    return board_defs.get(board).helium


CORES = {"microbit": "M0", "stm32f205": "M3", "stm32f405": "M4", "mps2-an500": "M7", "mps2-an505": "M33", "mps3-an547": "M55"}


def cores_markdown(rows: list[dict], missing: list[str] = ()) -> str:
    boards = [b for b in CORES if any(r["board"] == b for r in rows)]
    md = ("| model | weights | " + " | ".join(f"{CORES[b]} (`{b}`)" for b in boards) + " |\n"
          "|---|---|" + "---:|" * len(boards) + "\n")
    def key_of(r):
        return r["model"], r["method"], r["wbits"], r.get("levels", 16)

    keys = list(dict.fromkeys(key_of(r) for r in rows))
    for key in keys:
        cells = []
        for b in boards:
            r = next((r for r in rows if key_of(r) == key and r["board"] == b), None)
            cells.append(("·" if key[3] == 8 else "-") if r is None else f"{r['total']:,}")
        md += f"| {key[0]} | {config_name(*key[1:])} | " + " | ".join(cells) + " |\n"
    if any(k[3] == 8 for k in keys):
        md += ("\n\"int8 levels\": quantized with `--levels int8`, measured on the Helium core only (\"·\"): the "
               "other cores run the same kernels as with int16 levels.\n")
    if missing:  # grouped: "kws (3 widths) on microbit: RAM overflowed by 5912 B"
        groups: dict = {}
        for m in missing:
            what, why = m.split(": ", 1)
            model, board = what.split(" ")[0], what.split(" ")[-1]
            groups.setdefault((model, board, why), 0)
            groups[(model, board, why)] += 1
        md += "\n\"-\": does not fit: " + "; ".join(f"{model} on {board} ({why})" for model, board, why in groups) + ".\n"
    return md


TFLM_M55 = json.load(open(os.path.join(HERE, "data", "tflm_cmsis_nn_m55.json")))


def m55_markdown(rows: list[dict]) -> str:
    """The Cortex-M55 rows beside TFLite Micro + CMSIS-NN's MVE kernels (instructions and flash)."""
    extra = TFLM_M55["board_code_bytes"]
    md = ("| model | weights | nupes-edge instructions | TFLM + CMSIS-NN MVE | ratio | nupes-edge flash B | "
          "TFLM flash B | ratio |\n|---|---|---:|---:|---:|---:|---:|---:|\n")
    for r in rows:
        t = TFLM_M55["models"].get(r["model"])
        if not helium(r["board"]) or t is None:
            continue
        flash = t["flash_harness"] + extra
        md += (f"| {r['model']} | {config_name(r['method'], r['wbits'], r.get('levels', 16))} | {r['total']:,} | "
               f"{t['instructions']:,} | {r['total'] / t['instructions']:.2f}x | {r['flash']:,} | {flash:,} | "
               f"{r['flash'] / flash:.2f}x |\n")
    return md


def main_cores(args) -> None:
    """Every model and configuration on every emulated core (one quantization each)."""
    from nupes_edge import boards as board_defs

    names = [b.name for b in board_defs.all_boards() if b.emulated] if args.boards == "all" else args.boards.split(",")
    names = sorted(names, key=lambda b: list(CORES).index(b) if b in CORES else len(CORES))
    rows, missing = [], []
    for model in args.models.split(","):
        for cfg in args.configs.split(","):
            method, bits, levels = parse_config(cfg)
            q = _quantized(model, method, bits, levels)
            if q[0] is None:
                print(f"[speed] {model}: {MLPERF[model]} not found in {os.path.abspath(MLPERF_DIR)}: skipped",
                      file=sys.stderr)
                break
            for board in names:
                if levels == 8 and not helium(board):
                    continue  # the same kernels as int16 levels there
                print(f"[speed] {model} {config_name(method, bits, levels)} on {board} ...", file=sys.stderr, flush=True)
                try:
                    rows.append(measure(model, method, bits, board=board, quantized=q, levels=levels))
                except Exception as e:  # a model that does not fit a board's memory: said, not fatal
                    why = str(e).splitlines()[0]
                    print(f"[speed] {model} {method} W{bits} on {board}: {why}", file=sys.stderr)
                    over = re.search(r"(RAM|FLASH) overflowed by \d+ B", why)
                    missing.append(f"{model} {config_name(method, bits, levels)} on {board}: "
                                   f"{over.group(0) if over else why[:120]}")
    md = cores_markdown(rows, missing)
    print("\n" + md)
    if args.update_guard:  # the Helium core's bundled models: its own kernels, guarded like the M4's
        path = os.path.join(RESULTS, "speed_guard.json")
        guard = json.load(open(path)) if os.path.isfile(path) else {}
        guard.update({guard_key(r["model"], r["method"], r["wbits"], r.get("levels", 16), r["board"]): r["total"]
                      for r in rows if helium(r["board"]) and r["model"] in examples.NAMES})
        atomic_write_bytes(path, json.dumps(guard, indent=1).encode())
    os.makedirs(RESULTS, exist_ok=True)
    atomic_write_bytes(os.path.join(RESULTS, "speed_cores.json"), json.dumps(rows, indent=1).encode())
    if args.update_readme:
        cmd = ("Measured with `python benchmarks/speed.py --boards all --update-readme` (emulated instructions per "
               "inference, QEMU `-icount`, each board's counter checked against a loop of known length; every "
               "run bit-exact on the board):\n\n")
        readme_block.replace("speed-cores", cmd + md)
        m55 = m55_markdown(rows)
        if m55.count("\n") > 2:
            readme_block.replace("speed-m55", "Measured with the same command (TFLite Micro's figures: "
                                 "benchmarks/data/tflm_cmsis_nn_m55.json, with how they were measured):\n\n" + m55)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--configs", default=None,
                    help="method:bits[:int8] (int8: quantize --levels int8), comma-separated; default "
                         "uniform:8,nupes:4,nupes:2, and with --boards also nupes:4:int8")
    ap.add_argument("--models", default="digits,mnist5k,ic,kws")
    ap.add_argument("--update-readme", action="store_true")
    ap.add_argument("--update-guard", action="store_true")
    ap.add_argument("--boards", default=None, help="emulated boards (comma-separated, or 'all'): the per-core table")
    args = ap.parse_args()
    if args.boards:
        args.configs = args.configs or "uniform:8,nupes:4,nupes:4:int8,nupes:2"
        return main_cores(args)
    args.configs = args.configs or "uniform:8,nupes:4,nupes:2"
    rows = []
    for model in args.models.split(","):
        for cfg in args.configs.split(","):
            method, bits, levels = parse_config(cfg)
            print(f"[speed] {model} {config_name(method, bits, levels)} ...", file=sys.stderr, flush=True)
            r = measure(model, method, bits, levels=levels)
            if r is None:
                print(f"[speed] {model}: {MLPERF[model]} not found in {os.path.abspath(MLPERF_DIR)}: skipped",
                      file=sys.stderr)
                break
            print(per_layer_text(r), flush=True)
            rows.append(r)
    md = summary_markdown(rows)
    print("\n" + md)
    os.makedirs(RESULTS, exist_ok=True)
    atomic_write_bytes(os.path.join(RESULTS, "speed.json"), json.dumps(rows, indent=1).encode())
    if args.update_guard:
        path = os.path.join(RESULTS, "speed_guard.json")
        guard = {k: v for k, v in (json.load(open(path)) if os.path.isfile(path) else {}).items() if "@" in k}
        guard.update({guard_key(r["model"], r["method"], r["wbits"], r.get("levels", 16)): r["total"]
                      for r in rows if r["model"] in examples.NAMES})
        atomic_write_bytes(path, json.dumps(guard, indent=1).encode())
    if args.update_readme:
        cmd = "Measured with `python benchmarks/speed.py --update-readme` (QEMU netduinoplus2, `-icount shift=0`):\n\n"
        readme_block.replace("speed", cmd + md)


if __name__ == "__main__":
    main()
