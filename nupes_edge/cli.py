"""The nupes-edge command line: thin wrappers over nupes_edge.api.

Exit codes: 0 success, 1 verification/accuracy failure, 2 usage or input error.
Every command that reports numbers accepts --json and then prints one JSON object on stdout;
progress goes to stderr.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

from .errors import NupesError
from .quant.types import METHODS


def _bits_override(s: str) -> tuple[str, int]:
    name, sep, b = s.partition("=")
    if not sep or not b.isdigit():
        raise argparse.ArgumentTypeError(f"expected LAYER=BITS, got {s!r}")
    return name, int(b)


def _wbits(s: str) -> int:
    if not s.isdigit() or not 2 <= int(s) <= 8:
        raise argparse.ArgumentTypeError(f"weight bits must be an integer 2..8, got {s!r}")
    return int(s)


def _emit(obj: dict, as_json: bool, text: str) -> None:
    print(json.dumps(obj, sort_keys=True) if as_json else text)


def cmd_quantize(args) -> int:
    from . import api

    qm, h = api.quantize(args.model, args.data, args.method, args.wbits, args.output, dict(args.layer_wbits or []),
                         args.seed, progress=not args.quiet)
    layers = [{"name": n, "bits": p.bits, "a": p.a, "G": p.G} for n, p in qm.params.items() if hasattr(p, "G")]
    obj = {"output": args.output, "hash": h, "method": qm.method, "wbits": args.wbits,
           "seconds": qm.meta["seconds"], "layers": layers}
    lines = [f"wrote {args.output} ({qm.method}, W{args.wbits}A8, {qm.meta['seconds']:.1f} s, hash {h[:16]})"]
    lines += [f"  {d['name']:<24} {d['bits']} bits  a={d['a']:.3f}  G={d['G']}" for d in layers]
    _emit(obj, args.json, "\n".join(lines))
    return 0


def cmd_eval(args) -> int:
    from . import api

    r = api.eval_model(args.model, args.data)
    text = (f"{args.model} on {args.data} ({r.n} inputs)\n"
            f"  float top-1       {r.float_top1:.2%}\n  fake-quant top-1  {r.fakequant_top1:.2%}\n"
            f"  int ref top-1     {r.int_top1:.2%}\n  agreement         {r.agreement:.2%}\n"
            f"  output SQNR       {r.sqnr_db:.1f} dB")
    _emit(r.as_dict(), args.json, text)
    return 0


def cmd_demo(args) -> int:
    from . import api
    from .report import ACCURACY_COLUMNS, table

    os.makedirs(args.out, exist_ok=True)
    rows = []
    for method in args.methods.split(","):
        path = os.path.join(args.out, f"{args.example}-{method}-w{args.wbits}.nq")
        print(f"[demo] {args.example}: quantizing with {method}, W{args.wbits}A8 ...", file=sys.stderr)
        qm, _ = api.quantize(args.example, args.example, method, args.wbits, path, progress=True)
        r = api.eval_model(path, args.example)
        rows.append({"example": args.example, "method": method, "wbits": args.wbits, "seconds": qm.meta["seconds"],
                     "model": path, **r.as_dict()})
    text = (f"{args.example}: held-out test split ({rows[0]['n']} images), weights W{args.wbits}, activations int8\n"
            + table(rows, ACCURACY_COLUMNS))
    _emit({"rows": rows}, args.json, text)
    return 0


def _memory_text(rep: dict) -> str:
    return (f"  params {rep['params']}, MACs {rep['macs']}\n"
            f"  flash: weights {rep['flash_weights_bytes']} B (bound {rep['flash_weights_bound_bytes']} B), "
            f"LUTs {rep['flash_tables_bytes']} B, bias+requant {rep['flash_meta_bytes']} B\n"
            f"  RAM: arena {rep['arena_bytes']} B (naive {rep['arena_naive_bytes']} B), scratch {rep['scratch_bytes']} B")


def cmd_codegen(args) -> int:
    from . import api

    gen = api.codegen(args.model, args.output, args.name)
    text = f"wrote {len(gen.files)} files to {args.output}\n" + _memory_text(gen.report)
    _emit({**gen.report, "output": args.output, "files": gen.files}, args.json, text)
    return 0


def _require_host(board: str) -> None:
    if board != "host":
        raise NupesError(f"board '{board}' is not supported yet (available: host)")


def cmd_build(args) -> int:
    from . import api

    _require_host(args.board)
    if not args.model:
        raise NupesError("no model given (pass a model.nq)")
    hb = api.build_host(args.model, args.output, sanitize=args.sanitize, dsp=args.dsp)
    text = f"built {hb.runner}\n" + _memory_text(hb.generated.report)
    _emit({**hb.generated.report, "runner": hb.runner}, args.json, text)
    return 0


def cmd_verify(args) -> int:
    from . import api

    _require_host(args.board)
    if not args.model:
        raise NupesError("no model given (pass a model.nq)")
    r = api.verify_host(args.model, args.data, args.n, sanitize=args.sanitize, dsp=args.dsp)
    verdict = "PASS: bit-exact with the integer reference" if r.mismatches == 0 else "FAIL: outputs differ from the integer reference"
    _emit({**r.as_dict(), "board": args.board}, args.json, f"verify on {args.board}: {verdict}\n" + r.text())
    return 0 if r.mismatches == 0 else 1


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="nupes-edge", description="NUPES power-exponent quantization for microcontrollers")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    q = sub.add_parser("quantize", help="quantize a model into a model.nq")
    q.add_argument("model", help="a torch.export .pt2 file, or a bundled example name (digits, mnist5k)")
    q.add_argument("--data", required=True, help="calibration data: .npz with x, y, or a bundled name (its calib split)")
    q.add_argument("--method", choices=METHODS, default="nupes")
    q.add_argument("--wbits", type=_wbits, default=4, help="weight bits, 2..8 (default 4)")
    q.add_argument("--layer-wbits", type=_bits_override, action="append", metavar="LAYER=BITS",
                   help="per-layer weight bits (repeatable)")
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("-o", "--output", required=True, help="the model.nq to write")
    q.add_argument("--quiet", action="store_true", help="no progress on stderr")
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=cmd_quantize)

    e = sub.add_parser("eval", help="accuracy of a model.nq: float, fake-quant, integer reference")
    e.add_argument("model", help="a model.nq")
    e.add_argument("--data", required=True, help="evaluation data: .npz with x, y, or a bundled name (its test split)")
    e.add_argument("--json", action="store_true")
    e.set_defaults(func=cmd_eval)

    c = sub.add_parser("codegen", help="generate the C model library from a model.nq")
    c.add_argument("model", help="a model.nq")
    c.add_argument("-o", "--output", required=True, help="output folder")
    c.add_argument("--name", help="C name of the model (default: the model's name)")
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=cmd_codegen)

    b = sub.add_parser("build", help="generate C and compile it for a board")
    b.add_argument("model", nargs="?", help="a model.nq")
    b.add_argument("--board", default="host", help="target board (host)")
    b.add_argument("-o", "--output", default="build", help="output folder (default build/)")
    b.add_argument("--sanitize", action="store_true", help="host: AddressSanitizer + UBSan")
    b.add_argument("--dsp", action="store_true", help="host: compile the Cortex-M DSP path with emulated intrinsics")
    b.add_argument("--json", action="store_true")
    b.set_defaults(func=cmd_build)

    v = sub.add_parser("verify", help="run the built model on inputs and compare with the integer reference bit for bit")
    v.add_argument("model", nargs="?", help="a model.nq")
    v.add_argument("--board", default="host", help="target board (host)")
    v.add_argument("--data", help="inputs: .npz or bundled name (default: the model's calibration data set, test split)")
    v.add_argument("-n", type=int, default=200, help="number of inputs (default 200)")
    v.add_argument("--sanitize", action="store_true")
    v.add_argument("--dsp", action="store_true")
    v.add_argument("--json", action="store_true")
    v.set_defaults(func=cmd_verify)

    d = sub.add_parser("demo", help="quantize a bundled example with several methods and compare them")
    d.add_argument("--example", default="mnist5k", choices=("digits", "mnist5k"))
    d.add_argument("--methods", default="uniform,powerquant,nupes")
    d.add_argument("--wbits", type=_wbits, default=4)
    d.add_argument("--out", default="out", help="folder for the model.nq files (default out/)")
    d.add_argument("--json", action="store_true")
    d.set_defaults(func=cmd_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except NupesError as e:
        print(f"nupes-edge: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("nupes-edge: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
