"""Every public microcontroller model we have, as a user brings it: which deploy as they are.

    python benchmarks/zoo.py [--n 20] [--board-n 20] [--only NAME,...] [--update-readme]

Models: every .tflite in ../shared/models/zoo (TensorFlow Lite Micro's examples, MLCommons Tiny)
and ../shared/models/mlperf-tiny (Apache-2.0; SOURCES.md says where each comes from). For each:

- its operators, and nupes-edge's import verdict (the refusal, naming everything unsupported);
- an int8 file: kept with no data (uniform W8); "kept exactly" = the integer reference equals
  TFLite Micro on the file for ``--n`` random int8 inputs; its int8 re-export equals the file under
  TFLite Micro; host verify (the C code) with 0 mismatches; then the emulated STM32 (QEMU
  netduinoplus2, 1 MB flash / 128 KB RAM) where it fits: board mismatches, flash, RAM, emulated
  instructions per inference (or the reason it does not fit); and W4 powerquant (no data) and W4
  nupes (synthetic calibration) SQNR against the file's outputs;
- a float file: nupes W4 on synthetic calibration inputs (standard normal; no real data offline),
  host verify, the board, and SQNR against the float model.

Writes benchmarks/results/zoo.json; --update-readme rewrites README's zoo block. Absent folders
are said on stderr and skipped.
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

from nupes_edge import api, artifact, build, tflite_export, torch_exec  # noqa: E402
import readme_block  # noqa: E402
from nupes_edge.errors import NupesError  # noqa: E402
from nupes_edge.fileio import atomic_write_bytes  # noqa: E402
from nupes_edge.importers import import_tflite  # noqa: E402
from nupes_edge.interpreters import run_tflm  # noqa: E402
from nupes_edge.intref import quantize_input, run_int  # noqa: E402
from nupes_edge.layout import to_device  # noqa: E402
from nupes_edge.oracle import run_source  # noqa: E402
from nupes_edge.quant.driver import quantize_graph  # noqa: E402
from nupes_edge.quant.reconstruct import ReconConfig  # noqa: E402

SHARED = os.path.abspath(os.path.join(ROOT, "..", "shared", "models"))
FOLDERS = [os.path.join(SHARED, "zoo"), os.path.join(SHARED, "mlperf-tiny")]
RESULTS = os.path.join(HERE, "results", "zoo.json")


def operators(path: str) -> dict[str, int]:
    from ai_edge_litert import schema_py_generated as S

    names = {v: k for k, v in vars(S.BuiltinOperator).items() if not k.startswith("_")}
    m = S.ModelT.InitFromPackedBuf(bytearray(open(path, "rb").read()), 0)
    c: collections.Counter = collections.Counter()
    for sg in m.subgraphs or []:
        for op in sg.operators or []:
            oc = m.operatorCodes[op.opcodeIndex]
            n = names.get(max(oc.builtinCode, oc.deprecatedBuiltinCode), "?")
            if n == "CUSTOM":
                n = f"CUSTOM {oc.customCode.decode(errors='replace') if oc.customCode else '?'}"
            c[n] += 1
    return dict(c)


def rows_of(qm, xq: np.ndarray) -> np.ndarray:
    y = run_int(qm, xq)
    return to_device(y) if y.ndim == 4 else y.reshape(len(y), -1)


def real(y: np.ndarray, q) -> np.ndarray:
    return (y.astype(np.float64) - q.zero_point) * q.scale


def sqnr(ref: np.ndarray, y: np.ndarray) -> float | None:
    noise = float(((ref - y) ** 2).sum())
    return None if noise == 0 else round(float(10 * np.log10(max(float((ref ** 2).sum()), 1e-30) / noise)), 1)


def host_mismatches(qm, xq: np.ndarray) -> int:
    with tempfile.TemporaryDirectory() as d:
        hb = build.build_host(qm, d)
        out = build.run_host(hb.runner, to_device(xq))
    return int((out != rows_of(qm, xq)).any(axis=1).sum())


def board(qm, n: int) -> dict:
    """Run on the emulated STM32 with n random inputs; the figures, or why it does not fit."""
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "m.nq")
        artifact.save(qm, path)
        try:
            fb, rep = api.run_emulated(path, "stm32", os.path.join(d, "out"), "random", n, progress=False)
        except NupesError as e:
            return {"board": "does not fit", "reason": str(e).splitlines()[0][:160]}
    return {"board": "ran", "board_n": rep.n, "board_mismatches": rep.mismatches,
            "board_original_mismatches": (rep.original or {}).get("mismatches"),
            "flash": fb.sizes["flash_used"], "ram": fb.sizes["ram_used"], "instructions": round(rep.count_mean)}


def measure(path: str, n: int, board_n: int) -> dict:
    name = os.path.basename(path)
    row: dict = {"file": name, "folder": os.path.basename(os.path.dirname(path)), "operators": operators(path)}
    print(f"[zoo] {name} ...", file=sys.stderr, flush=True)
    try:
        g = import_tflite(path)
    except NupesError as e:
        row.update(status="refused", reason=str(e).split(": ", 1)[-1][:300])
        return row
    data = open(path, "rb").read()
    rng = np.random.default_rng(0)
    if g.file_quant is not None:
        kept = quantize_graph(g, None, "uniform", 8, name="zoo")
        row["kind"] = "int8"
        xq = rng.integers(-128, 128, (n, *g.input_shape)).astype(np.int8)
        want = run_source(data, to_device(xq), kept.input_q)
        got = rows_of(kept, xq)
        if want.dtype != np.int8:  # float outputs (DEQUANTIZE): compare dequantized
            got = np.float32(kept.output_q.scale) * (got.astype(np.float32) - np.float32(kept.output_q.zero_point))
        row["kept_exactly"] = bool(np.array_equal(got, want))
        again = run_tflm(tflite_export.export(kept, "int8"), to_device(xq)).reshape(n, -1)  # int8 in and out
        if again.dtype != want.dtype:
            again = np.float32(kept.output_q.scale) * (again.astype(np.float32) - np.float32(kept.output_q.zero_point))
        row["export_equal"] = bool(np.array_equal(again, want))
        row["host_mismatches"] = host_mismatches(kept, xq)
        row.update(board(kept, board_n))
        want_real = want.astype(np.float64) if want.dtype != np.int8 else real(got if row["kept_exactly"] else want,
                                                                               kept.output_q)
        x_calib = ((rng.integers(-128, 128, (256, *g.input_shape)) - kept.input_q.zero_point)
                   * kept.input_q.scale).astype(np.float32)
        for method in ("powerquant", "nupes"):
            t0 = time.perf_counter()
            qm = quantize_graph(g, x_calib if method == "nupes" else None, method, 4, name="zoo",
                                recon=ReconConfig(iters=300, batch=32))
            y = rows_of(qm, quantize_input(real(xq, kept.input_q), qm.input_q.scale, qm.input_q.zero_point))
            row[f"{method}_w4_sqnr_vs_file_db"] = sqnr(want_real.reshape(n, -1), real(y, qm.output_q))
            row[f"{method}_w4_s"] = round(time.perf_counter() - t0, 1)
        row["status"] = "deploys" if (row["kept_exactly"] and row["export_equal"] and not row["host_mismatches"]
                                      and row.get("board_mismatches", 0) == 0) else "wrong"
    else:
        row["kind"] = "float"
        x_calib = rng.standard_normal((256, *g.input_shape)).astype(np.float32)
        qm = quantize_graph(g, x_calib, "nupes", 4, name="zoo", recon=ReconConfig(iters=300, batch=32))
        x = rng.standard_normal((n, *g.input_shape)).astype(np.float32)
        xq = quantize_input(x, qm.input_q.scale, qm.input_q.zero_point)
        f = torch_exec.run_numpy(g, x).reshape(n, -1).astype(np.float64)
        row["nupes_w4_sqnr_vs_float_db"] = sqnr(f, real(rows_of(qm, xq), qm.output_q))
        row["host_mismatches"] = host_mismatches(qm, xq)
        row.update(board(qm, board_n))
        row["status"] = "deploys" if not row["host_mismatches"] and row.get("board_mismatches", 0) == 0 else "wrong"
    print(f"[zoo] {name}: {row}", file=sys.stderr, flush=True)
    return row


def markdown(rows: list[dict], n: int) -> str:
    ran = [r for r in rows if r["status"] == "deploys" and r.get("board") == "ran"]
    host_only = [r for r in rows if r["status"] == "deploys" and r.get("board") != "ran"]
    refused = [r for r in rows if r["status"] == "refused"]
    md = (f"**{len(ran)} of {len(rows)} public models deploy as they are** and run bit-exact on the emulated "
          f"STM32F405 (int8 files kept exactly, equal to TFLite Micro on the file; float files quantized nupes W4 on "
          "synthetic calibration); "
          + (f"{len(host_only)} more {'is' if len(host_only) == 1 else 'are'} kept exactly and verified on the host "
             f"but need{'s' if len(host_only) == 1 else ''} more than the F405's 128 KB of RAM; " if host_only else "")
          + f"{len(refused)} {'is' if len(refused) == 1 else 'are'} refused (operators or int16 activations not "
          "supported yet).\n\n"
          "| file | operators | nupes-edge | = TFLite Micro | export = file | host | STM32F405 (QEMU): flash / RAM / "
          "instructions | W4 SQNR vs file (powerquant / nupes) |\n|---|---|---|---|---|---|---|---|\n")
    for r in rows:
        ops = ", ".join(f"{k}×{v}" if v > 1 else k for k, v in sorted(r["operators"].items()))
        if r["status"] == "refused":
            md += f"| {r['file']} | {ops} | refused: {r['reason'].replace('|', '/')[:150]} | | | | | |\n"
            continue
        verdict = "kept (int8, no data)" if r["kind"] == "int8" else "nupes W4 (float file)"
        exact = ("-" if r["kind"] == "float" else f"{'yes' if r['kept_exactly'] else 'NO'} ({n} inputs)")
        export = "-" if r["kind"] == "float" else ("yes" if r["export_equal"] else "NO")
        host = f"{r['host_mismatches']} mismatches"
        if r.get("board") == "ran":
            brd = (f"{r['board_mismatches']} mismatches; {r['flash']:,} B / {r['ram']:,} B / {r['instructions']:,}")
        else:
            brd = f"does not fit: {r.get('reason', '')[:80]}"
        if r["kind"] == "int8":
            f = lambda v: "exact" if v is None else f"{v:.1f} dB"  # noqa: E731
            sq = f"{f(r['powerquant_w4_sqnr_vs_file_db'])} / {f(r['nupes_w4_sqnr_vs_file_db'])}"
        else:
            v = r["nupes_w4_sqnr_vs_float_db"]
            sq = f"vs float: {'exact' if v is None else f'{v:.1f} dB'}"
        md += f"| {r['file']} | {ops} | {verdict} | {exact} | {export} | {host} | {brd} | {sq} |\n"
    return md


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=20, help="random inputs compared with TFLite Micro and the host build")
    ap.add_argument("--board-n", type=int, default=20, help="random inputs run on the emulated board")
    ap.add_argument("--only", default="", help="comma-separated file names (default: all)")
    ap.add_argument("--update-readme", action="store_true")
    ap.add_argument("--render", action="store_true", help="re-render the README block from results/zoo.json only")
    args = ap.parse_args()
    if args.render:
        rows = json.load(open(RESULTS))
        md = markdown(rows, args.n)
        print(md)
        if args.update_readme:
            readme_block.replace("zoo", f"Measured with `python benchmarks/zoo.py --update-readme`:\n\n{md}")
        return 0
    paths = []
    for folder in FOLDERS:
        if not os.path.isdir(folder):
            print(f"[zoo] {folder} is absent: skipped", file=sys.stderr)
            continue
        paths += sorted(os.path.join(folder, f) for f in os.listdir(folder) if f.endswith(".tflite"))
    if args.only:
        keep = set(args.only.split(","))
        paths = [p for p in paths if os.path.basename(p) in keep]
    if not paths:
        print("no public model found under ../shared/models", file=sys.stderr)
        return 2
    rows = [measure(p, args.n, args.board_n) for p in paths]
    md = markdown(rows, args.n)
    print(md)
    if not args.only:
        os.makedirs(os.path.dirname(RESULTS), exist_ok=True)
        atomic_write_bytes(RESULTS, json.dumps(rows, indent=1).encode())
    if args.update_readme and not args.only:
        readme_block.replace("zoo", f"Measured with `python benchmarks/zoo.py --update-readme`:\n\n{md}")
    return 1 if any(r["status"] == "wrong" for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
