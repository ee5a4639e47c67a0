"""Mutated model and data files through the loaders: every outcome must be a loaded model or a
NupesError (a clear message, exit 2 in the CLI), never another exception, a hang or a memory bomb.

    python benchmarks/fuzz.py [--n 10000] [--seed 0] [--build 200]

--n cases per file kind: model.nq, .tflite (int8 and float exports of a small model, and the
hand-built int8 files of every operator the importer maps: tests/test_tflite_ops_tflm.py and
tests/test_tflite_moves_tflm.py), .npz and nupes-edge.toml. An imported int8 .tflite is also
quantized (its own quantization kept) and rendered to C, so the lowering sees it too.
Mutations: truncation, bit flips, byte runs overwritten, and for model.nq manifest fields replaced
by strange values with the file re-sealed (valid zip, valid checksums), so the semantic checks
are what stands between the file and the code generator; for .npz, header bombs; for the toml,
values replaced by strange TOML values. Each case's
peak Python/numpy memory (tracemalloc) and time are measured. With ``--build K``, up to K distinct
loaded model.nq files are also compiled with AddressSanitizer + UBSan and run on random inputs
against the integer reference: a loaded model must build and agree bit for bit. Prints counts by
outcome and the first few failures; exit 1 if any input raised something other than NupesError,
crashed or disagreed.
tests/test_fuzz.py runs a short version with a fixed seed.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import resource
import sys
import tempfile
import time
import tracemalloc
import warnings
import zipfile
from collections import Counter

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from nupes_edge import artifact, tflite_export  # noqa: E402
from nupes_edge.data import load_data  # noqa: E402
from nupes_edge.errors import NupesError  # noqa: E402
from nupes_edge.importers import import_tflite_bytes  # noqa: E402

STRANGE = [None, True, -1, 0, 2**31, -2**63, 1e308, float("inf"), float("nan"), "", "x" * 300, "*/", [], {}, [[1]],
           {"array": "nope"}]


def _byte_mutations(data: bytes, rng: np.random.Generator) -> bytes:
    b = bytearray(data)
    kind = rng.integers(3)
    if kind == 0:
        return bytes(b[:rng.integers(0, len(b))])
    if kind == 1:
        for _ in range(rng.integers(1, 8)):
            i = rng.integers(len(b))
            b[i] ^= 1 << int(rng.integers(8))
        return bytes(b)
    i = rng.integers(len(b))
    b[i:i + 4] = rng.integers(0, 256, 4, dtype=np.uint8).tobytes()
    return bytes(b)


def _walk(obj, path=()):
    """Every (path, value) in a JSON tree."""
    yield path, obj
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _walk(v, path + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _walk(v, path + (i,))


def _manifest_mutation(data: bytes, rng: np.random.Generator) -> bytes:
    src = zipfile.ZipFile(io.BytesIO(data))
    m = json.loads(src.read("manifest.json"))
    for _ in range(rng.integers(1, 3)):
        paths = [p for p, _ in _walk(m) if p and p[0] != "arrays"]
        p = paths[rng.integers(len(paths))]
        node = m
        for k in p[:-1]:
            node = node[k]
        node[p[-1]] = STRANGE[rng.integers(len(STRANGE))]
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        for item in src.namelist():
            z.writestr(item, json.dumps(m).encode() if item == "manifest.json" else src.read(item))
    return artifact.reseal(out.getvalue())


def _npz_bomb(rng: np.random.Generator) -> bytes:
    header = io.BytesIO()
    shape = (1 << int(rng.integers(20, 45)),)
    np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False, "shape": shape})
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        z.writestr("x.npy", header.getvalue() + b"\0" * 64)
        z.writestr("y.npy", header.getvalue() + b"\0" * 64)
    return out.getvalue()


TOML_SEED = b"""[project]
model = "digits"
data = "digits"
method = "uniform"
wbits = 4
board = "stm32"
seed = 0
layer_wbits = { conv2d = 8 }
"""
TOML_STRANGE = ["-1", "0", "1e308", "nan", "inf", '""', '"x"', "true", "[]", "{}", "[[1]]", "2147483648", '"../.."',
                "{ a = 1 }", '"nupes"', "9"]


def _toml_mutation(data: bytes, rng: np.random.Generator) -> bytes:
    lines = data.decode().splitlines()
    i = int(rng.integers(1, len(lines)))
    key = lines[i].split("=")[0].strip()
    if rng.random() < 0.2:  # a key misspelled
        key = key[:-1] or "x"
    lines[i] = f"{key} = {TOML_STRANGE[rng.integers(len(TOML_STRANGE))]}"
    return ("\n".join(lines) + "\n").encode()


def seeds() -> dict[str, list[bytes]]:
    """Valid files to mutate: a small quantized model, its .tflite exports, the hand-built operator
    files of the tests, an .npz and a project toml."""
    from nupes_edge.ir import Graph, Node, infer_shapes
    from nupes_edge.quant.driver import quantize_graph

    rng = np.random.default_rng(0)
    conv = Node("c", "conv2d", ["x"], "y", {"stride": [1, 1], "pads": [1, 1, 1, 1], "groups": 1, "act": "relu"},
                rng.normal(0, 1, (4, 2, 3, 3)).astype(np.float32), rng.normal(0, 1, 4).astype(np.float32))
    fc = Node("f", "linear", ["z"], "out", {"act": "none"}, rng.normal(0, 1, (3, 64)).astype(np.float32),
              rng.normal(0, 1, 3).astype(np.float32))
    flat = Node("fl", "flatten", ["y"], "z", {})
    g = Graph("x", (2, 4, 4), "out", [conv, flat, fc])
    infer_shapes(g)
    x = rng.normal(0, 1, (16, 2, 4, 4)).astype(np.float32)
    qm = quantize_graph(g, x, "powerquant", 4, name="fuzz", progress=False)
    npz = io.BytesIO()
    np.savez(npz, x=x, y=rng.integers(0, 3, 16))
    from tests.test_tflite_moves_tflm import CASES as MOVES
    from tests.test_tflite_ops_tflm import CASES as OPS

    ops = [make() for make, _ in OPS.values()] + [make() for make in MOVES.values()]
    return {"nq": [artifact.dumps(qm)], "tflite-int8": [tflite_export.export(qm, "int8")],
            "tflite-float": [tflite_export.export(qm, "float")], "tflite-ops": ops, "npz": [npz.getvalue()],
            "toml": [TOML_SEED]}


def build_and_run(qm, tmp: str, rng: np.random.Generator) -> str:
    """Compile a loaded model with ASan + UBSan, run random int8 inputs: 'exact' or 'crash: ...'."""
    from nupes_edge.build import build_host, run_host
    from nupes_edge.intref import run_int
    from nupes_edge.layout import from_device, to_device

    xq = rng.integers(-128, 128, (8, *qm.graph.input_shape)).astype(np.int8)
    try:
        hb = build_host(qm, os.path.join(tmp, "build"), sanitize=True)
        dev = from_device(run_host(hb.runner, to_device(xq), timeout=10), qm.graph.output_shape)
    except Exception as e:  # noqa: BLE001 - a compile error, a sanitizer report or a hang
        return f"crash: build/run: {type(e).__name__}: {str(e)[:300]}"
    ref = run_int(qm, xq)
    if not np.array_equal(dev.reshape(len(xq), -1), ref.reshape(len(xq), -1)):
        return "crash: the built model disagrees with the integer reference"
    return "exact"


def run_one(kind: str, data: bytes, tmp: str, loaded: list | None = None) -> str:
    """'ok', 'refused' (NupesError) or 'crash: <type>'; a loaded model.nq is appended to ``loaded``."""
    try:
        if kind == "nq":
            qm = artifact.loads(data, "fuzz.nq")
            from nupes_edge import codegen

            codegen.render(qm)  # what the generator would write from it
            if loaded is not None:
                loaded.append(qm)
        elif kind.startswith("tflite"):
            g = import_tflite_bytes(data, "fuzz.tflite")
            if g.file_quant is not None:  # int8: the kept model through the lowering and the C generator
                from nupes_edge import codegen
                from nupes_edge.quant.driver import quantize_graph

                codegen.render(quantize_graph(g, None, "uniform", 8, name="fuzz", progress=False))
        elif kind == "toml":
            from nupes_edge import project

            folder = os.path.join(tmp, "project")
            os.makedirs(folder, exist_ok=True)
            with open(os.path.join(folder, project.FILE), "wb") as f:
                f.write(data)
            project.load(folder)
        else:
            p = os.path.join(tmp, "fuzz.npz")
            with open(p, "wb") as f:
                f.write(data)
            load_data(p, input_shape=(2, 4, 4), n_classes=3)
        return "ok"
    except NupesError:
        return "refused"
    except Exception as e:  # noqa: BLE001 - exactly what the campaign counts
        return f"crash: {type(e).__name__}: {str(e)[:100]}"


def campaign(n: int, seed: int = 0, progress: bool = True, build: int = 0) -> Counter:
    rng = np.random.default_rng(seed)
    base = seeds()
    outcomes: Counter = Counter()
    crashes = []
    slowest = 0.0
    peak, peak_case = 0, None
    built: set[str] = set()
    stray: list = []
    tracemalloc.start()
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(n * len(base)):
            kind = list(base)[i % len(base)]
            data = base[kind][rng.integers(len(base[kind]))]
            r = rng.random()
            if kind == "nq" and r < 0.4:
                mutated = _manifest_mutation(data, rng)
            elif kind == "npz" and r < 0.1:
                mutated = _npz_bomb(rng)
            elif kind == "toml" and r < 0.7:
                mutated = _toml_mutation(data, rng)
            else:
                mutated = _byte_mutations(data, rng)
            loaded: list = []
            tracemalloc.reset_peak()
            base_mem = tracemalloc.get_traced_memory()[0]
            t = time.perf_counter()
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                out = run_one(kind, mutated, tmp, loaded)
            if caught and len(stray) < 10:  # a user would see these: stray output is a defect too
                stray.append((kind, i, f"{caught[0].category.__name__}: {caught[0].message} "
                                       f"({os.path.basename(caught[0].filename)}:{caught[0].lineno})"))
            outcomes[("any", "warned")] += bool(caught)
            slowest = max(slowest, time.perf_counter() - t)
            case_peak = tracemalloc.get_traced_memory()[1] - base_mem
            if case_peak > peak:
                peak, peak_case = case_peak, (kind, i)
            outcomes[(kind, out.split(":")[0])] += 1
            if out.startswith("crash") and len(crashes) < 10:
                crashes.append((kind, i, out))
            # Compile and run each distinct loaded model (the untouched seed once, then mutants).
            if loaded and len(built) < build and loaded[0].meta["hash"] not in built:
                built.add(loaded[0].meta["hash"])
                res = build_and_run(loaded[0], tmp, rng)
                outcomes[("nq built+run", res.split(":")[0])] += 1
                if res.startswith("crash") and len(crashes) < 10:
                    crashes.append(("nq built+run", i, res))
            if progress and i % 500 == 499:
                print(f"[fuzz] {i + 1}/{n * len(base)}", file=sys.stderr, flush=True)
    tracemalloc.stop()
    outcomes["_slowest_s"] = round(slowest, 2)
    outcomes["_peak_mb"] = round(peak / 2**20, 1)
    outcomes["_peak_case"] = peak_case
    outcomes["_crashes"] = crashes
    outcomes["_warnings"] = stray
    return outcomes


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10000, help="cases per file kind")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--build", type=int, default=0, metavar="K",
                    help="also compile (ASan + UBSan) and run up to K distinct loaded model.nq files")
    args = ap.parse_args()
    res = campaign(args.n, args.seed, build=args.build)
    crashes = res.pop("_crashes")
    slowest = res.pop("_slowest_s")
    peak = res.pop("_peak_mb")
    stray = res.pop("_warnings")
    peak_case = res.pop("_peak_case")
    print(f"{'file':<14} {'outcome':<10} {'count':>6}")
    for (kind, out), c in sorted(res.items()):
        print(f"{kind:<14} {out:<10} {c:>6}")
    print(f"slowest case: {slowest} s; largest peak memory of one case: {peak} MB (tracemalloc; {peak_case}); "
          f"process peak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")
    for c in crashes:
        print("CRASH", *c)
    for w in stray:
        print("WARNING", *w)
    return 1 if crashes or stray else 0


if __name__ == "__main__":
    sys.exit(main())
