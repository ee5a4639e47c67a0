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

from . import __version__
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


def _flash_size(s: str) -> int:
    from .quant.mixed import parse_size

    try:
        return parse_size(s)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _bounded(kind, lo, hi, what: str):
    """An argparse type: ``kind`` (int or float) within [lo, hi], else a usage error (exit 2)."""
    def parse(s: str):
        try:
            v = kind(s)
        except (ValueError, OverflowError):
            raise argparse.ArgumentTypeError(f"{what}: expected a number, got {str(s)[:40]!r}") from None
        if not (lo <= v <= hi):  # also NaN
            raise argparse.ArgumentTypeError(f"{what}: {str(s)[:40]} is outside {lo}..{hi}")
        return v
    return parse


_CONTROL = {c: f"\\x{c:02x}" for c in [*range(0x20), 0x7F, *range(0x80, 0xA0)] if c not in (0x0A, 0x09)}


def safe_text(text: str) -> str:
    """Text for the terminal with every control character escaped (names from files and devices are
    untrusted: an ESC sequence could retitle or clear the terminal)."""
    return str(text).translate(_CONTROL)


def _emit(obj: dict, as_json: bool, text: str) -> None:
    print(json.dumps(obj, sort_keys=True) if as_json else safe_text(text))


BUNDLED = ("digits", "mnist5k")  # examples.NAMES, without importing torch for a quick refusal


def _check_paths(model: str | None = None, data: str | None = None) -> None:
    """Missing files named before anything heavy is imported (torch takes seconds to load)."""
    if model and model not in BUNDLED and not os.path.isfile(model):
        raise NupesError(f"{model}: no such file, and not a bundled example ({', '.join(BUNDLED)})")
    if data and data not in BUNDLED and data != "random" and not os.path.isfile(data):
        raise NupesError(f"{data}: no such file, and not a bundled data set ({', '.join(BUNDLED)}) or 'random'")


def cmd_quantize(args) -> int:
    _check_paths(args.model, args.data)
    from . import api

    qm, h = api.quantize(args.model, args.data, args.method, args.wbits, args.output, dict(args.layer_wbits or []),
                         args.seed, progress=not args.quiet, flash_budget=args.flash_budget,
                         recalibrate=args.recalibrate, keep_softmax=args.keep_softmax,
                         levels={"int16": 16, "int8": 8}[args.levels], state=args.state)
    fb = qm.meta.get("flash_budget")
    layers = [{"name": n, "bits": p.bits, "a": p.a, "G": p.G} for n, p in qm.params.items() if hasattr(p, "G")]
    widths = sorted({d["bits"] for d in layers} | set(qm.meta.get("stateful_bits", {}).values())) or [args.wbits]
    wname = f"W{widths[0]}" if len(widths) == 1 else f"W{widths[0]}-{widths[-1]} mixed"
    obj = {"output": args.output, "hash": h, "method": qm.method, "wbits": args.wbits if fb is None else None,
           "levels": qm.meta.get("levels", 16), "state": qm.meta.get("state", "reset"),
           "seconds": qm.meta["seconds"], "layers": layers}
    kept = qm.meta.get("kept_from_file")
    if kept:
        obj["kept_from_file"] = kept
    lines = [f"wrote {args.output} ({qm.method}, {wname}A8, {qm.meta['seconds']:.1f} s, hash {h[:16]})",
             "  per layer: weight bits, power exponent a (1 = uniform), table shift G (levels are scaled by 2^G;"
             " docs/numerics.md)"]
    if kept:
        lines.insert(1, f"  from the .tflite file: activation {kept['activations']}; weights: {kept['weights']}"
                        + "".join(f"; {kept[k]}" for k in ("lstm", "svdf") if kept.get(k)))
    if qm.meta.get("state") == "carry":
        lines.insert(1, "  state: carried from each inference to the next (verify / run / eval take their inputs as "
                        "one sequence; nupes_<name>_reset() in C; docs/tflite.md)")
    if fb is None:
        lines += [f"  {d['name']:<24} {d['bits']} bits  a={d['a']:.3f}  G={d['G']}" for d in layers]
    else:
        obj["flash_budget"] = {k: fb[k] for k in ("budget_bytes", "flash_bytes", "min_bytes", "max_bytes", "seconds")}
        for d in layers:
            d.update(flash_bytes=fb["cost_bytes"][d["name"]][str(d["bits"])],
                     sensitivity=fb["sensitivity"].get(d["name"], {}).get(str(d["bits"])))
        lines[1] += (";\n  flash: the layer's bytes (weights, tables, bias + requantization); sensitivity: the output"
                     " error with only this layer quantized, ||y - y_float||^2 / ||y_float||^2 on calibration data")
        lines += [f"  {d['name']:<24} {d['bits']} bits  a={d['a']:.3f}  G={d['G']:<3} flash {d['flash_bytes']:>7,} B"
                  + ("" if d["sensitivity"] is None else f"  sensitivity {d['sensitivity']:.2e}") for d in layers]
        obj["flash_budget"]["table_free_adds"] = fb["table_free_adds"]
        lines += [f"  {a:<24} add without rescaling tables: their 2,048 B went to weight bits (the add computes"
                  f" the same values, about 2.5x its instructions)" for a in fb["table_free_adds"]]
        lines.append(f"  model flash {fb['flash_bytes']:,} B of the {fb['budget_bytes']:,} B budget "
                     f"(possible: {fb['min_bytes']:,}-{fb['max_bytes']:,} B; search {fb['seconds']:.1f} s)")
    _emit(obj, args.json, "\n".join(lines))
    return 0


def _project_model(args) -> str:
    """The model.nq named on the command line, else the project's (quantized once, cached)."""
    from . import project

    if args.model:
        return args.model
    proj = _project()
    if proj is None:
        raise NupesError(f"no model given and no {project.FILE} here (pass a model.nq or run `nupes-edge init`)")
    return project.quantized_model(proj)


def _data(args) -> str | None:
    """--data, else the project's test data, else None (the model's own data set)."""
    from . import project

    if args.data:
        return args.data
    proj = _project()
    return project.test_data(proj) if proj else None


def cmd_eval(args) -> int:
    _check_paths(None, args.data)
    from . import api

    args.model = _project_model(args)
    args.data = _data(args)
    if not args.data:
        raise NupesError("eval needs --data (a bundled name or an .npz) outside a project folder")
    r = api.eval_model(args.model, args.data)
    from .evaluate import metrics_text

    pct = lambda v: "no labels" if v is None else f"{v:.2%}"  # noqa: E731
    text = (f"{args.model} on {args.data} ({r.n} inputs)\n"
            f"  float top-1       {pct(r.float_top1)}\n  fake-quant top-1  {pct(r.fakequant_top1)}\n"
            f"  int ref top-1     {pct(r.int_top1)}\n  agreement         {r.agreement:.2%}\n"
            f"  output SQNR       {r.sqnr_db:.1f} dB\n  vs float model    {metrics_text(r.metrics)}")
    o = r.original
    if o is not None:
        if o["what"] == "kept":
            text += (f"\n  original .tflite  {o['mismatches']} of {r.n} outputs differ from TFLite Micro on the file"
                     + (": FAIL, the model is not the file's model" if o["mismatches"] else " (bit-exact)"))
        elif o["agreement"] == o["agreement"]:
            sq = "" if o["sqnr_db"] != o["sqnr_db"] else f", SQNR {o['sqnr_db']:.1f} dB"
            text += f"\n  vs original file  top-1 agreement {o['agreement']:.2%}{sq} (TFLite Micro on the file)"
        if o["note"]:
            text += f"\n  original .tflite  {o['note']}"
    _emit(r.as_dict(), args.json, text)
    return 1 if o is not None and o.get("mismatches") else 0


def cmd_demo(args) -> int:
    """Quantize a bundled example several ways, then run the NUPES model on the (emulated) board."""
    from . import api
    from .report import ACCURACY_COLUMNS, table

    os.makedirs(args.out, exist_ok=True)
    rows = []
    for method in args.methods.split(","):
        path = os.path.join(args.out, f"{args.example}-{method}-w{args.wbits}.nq")
        print(f"[demo] {args.example}: quantizing with {method}, W{args.wbits}A8 ...", file=sys.stderr)
        qm, _ = api.quantize(args.example, args.example, method, args.wbits, path, progress=True)
        from . import project

        project.remember_example(args.example, method, args.wbits, path)  # a project's first build reuses it
        r = api.eval_model(path, args.example)
        rows.append({"example": args.example, "method": method, "wbits": args.wbits, "seconds": qm.meta["seconds"],
                     "model": path, **r.as_dict()})
    text = (f"{args.example}: held-out test split ({rows[0]['n']} images), weights W{args.wbits}, activations int8\n"
            + table(rows, ACCURACY_COLUMNS))
    result = {"rows": rows}
    code = 0
    if args.board != "none":
        model = rows[-1]["model"]
        print(f"[demo] building {model} for {args.board} and verifying it over serial ...", file=sys.stderr)
        fb, rep = api.run_emulated(model, args.board, os.path.join(args.out, "build", args.board), n=args.n)
        result.update(board=fb.board.name, build=fb.sizes, verify=rep.as_dict())
        verdict = "PASS: bit-exact with the integer reference" if not rep.failed else "FAIL"
        text += (f"\n\n{fb.text()}\n\nverify {rows[-1]['method']} W{args.wbits} on {fb.board.name} "
                 f"(QEMU {fb.board.qemu['machine']}): {verdict}\n{rep.text()}")
        code = 1 if rep.failed else 0
    _emit(result, args.json, text)
    return code


def _memory_text(rep: dict) -> str:
    return (f"  params {rep['params']}, MACs {rep['macs']}\n"
            f"  flash: weights {rep['flash_weights_bytes']} B (bound {rep['flash_weights_bound_bytes']} B), "
            f"LUTs {rep['flash_tables_bytes']} B, bias+requant {rep['flash_meta_bytes']} B\n"
            f"  RAM: arena {rep['arena_bytes']} B (naive {rep['arena_naive_bytes']} B), scratch {rep['scratch_bytes']} B"
            + (f", state {rep['state_bytes']} B (carried)" if rep.get("state_bytes") else ""))


def cmd_codegen(args) -> int:
    from . import api

    gen = api.codegen(_project_model(args), args.output, args.name, args.data)
    text = f"wrote {len(gen.files)} files to {args.output}\n" + _memory_text(gen.report)
    _emit({**gen.report, "output": args.output, "files": gen.files}, args.json, text)
    return 0


def _project():
    from . import project

    return project.load() if project.find() else None


def _resolve(args) -> tuple[str, str, str]:
    """(model.nq path, board name, build dir) from the arguments, else from nupes-edge.toml."""
    from . import project

    proj = _project()
    board = args.board or (proj.board if proj else "host")
    if args.model:
        model = args.model
        base = os.path.join("build", board)
    elif proj:
        model = project.quantized_model(proj)
        base = proj.build_dir(board)
    else:
        raise NupesError(f"no model given and no {project.FILE} here (pass a model.nq or run `nupes-edge init`)")
    if not model.endswith(".nq"):
        raise NupesError(f"{model}: expected a model.nq (make one with `nupes-edge quantize`)")
    return model, board, getattr(args, "output", None) or base


_STAMP = ".build-stamp.json"


def _build_key(model: str, board: str, ram_budget) -> str:
    """What a board build is a function of: the model file, the board, the RAM budget, nupes-edge's
    version and every C source, header and template it compiles (hashed without importing them)."""
    import hashlib
    import importlib.util

    from . import __version__

    h = hashlib.sha256(f"{__version__}\0{board}\0{ram_budget}\0".encode())
    with open(model, "rb") as f:
        h.update(f.read())
    for pkg in ("nupes_edge.runtime_c", "nupes_edge.boards", "nupes_edge.codegen"):
        for root in importlib.util.find_spec(pkg).submodule_search_locations or []:
            for folder, dirs, files in sorted(os.walk(root)):
                dirs.sort()
                for name in sorted(files):
                    if name.endswith((".c", ".h", ".j2", ".toml", ".ld", ".py")):
                        with open(os.path.join(folder, name), "rb") as f:
                            h.update(name.encode() + b"\0" + f.read())
    return h.hexdigest()


def _up_to_date(out: str, key: str) -> dict | None:
    """The recorded result of the last build in ``out`` if it was made from exactly these inputs
    and its files are all still there."""
    try:
        with open(os.path.join(out, _STAMP), encoding="utf-8") as f:
            stamp = json.load(f)
    except (OSError, ValueError):
        return None
    if not isinstance(stamp, dict) or stamp.get("key") != key or not isinstance(stamp.get("result"), dict):
        return None
    files = [stamp["result"].get(k) for k in ("elf", "bin", "model", "report")]
    if not all(isinstance(p, str) and os.path.isfile(p) for p in files) or not isinstance(stamp.get("text"), str):
        return None
    return stamp


def cmd_build(args) -> int:
    model, board, out = _resolve(args)
    key = None
    if board != "host" and not getattr(args, "force", False):
        key = _build_key(model, board, args.ram_budget)
        stamp = _up_to_date(out, key)
        if stamp is not None:  # nothing changed: no quantizing, compiling or report (under 2 s)
            _emit(stamp["result"], args.json, stamp["text"] + "\n  up to date (nothing changed since the last build;"
                  " --force rebuilds)")
            return 0
    from . import api

    if board == "host":
        hb = api.build_host(model, out, sanitize=args.sanitize, dsp=args.dsp, ram_budget=args.ram_budget)
        _emit({**hb.generated.report, "runner": hb.runner, "board": "host"}, args.json,
              f"built {hb.runner}\n" + _memory_text(hb.generated.report))
        return 0
    def write_report(work: str, built) -> None:  # inside the new folder, before it replaces the old one
        _report_beside(model, work, {**built.sizes, "board": built.board.name})

    fb = api.build_board(model, board, out, args.ram_budget, before_swap=write_report)
    copy = os.path.join(out, "model.nq")  # the quantized model, beside the firmware built from it
    report = os.path.join(out, "report.html")
    result = {**fb.sizes, "elf": fb.elf, "bin": fb.bin, "board": fb.board.name, "model": copy, "report": report}
    text = fb.text() + f"\n  model.nq: {model} (copied to {copy})\n  report: {report}"
    if key is None:
        key = _build_key(model, board, args.ram_budget)
    from .fileio import atomic_write_bytes

    # written last: a build interrupted before this point (at the report, say) is redone next time
    atomic_write_bytes(os.path.join(out, _STAMP), json.dumps({"key": key, "result": result, "text": text}).encode())
    _emit(result, args.json, text)
    return 0


def _report_beside(model: str, out: str, sizes: dict, profile=None, count_kind=None) -> str:
    """analyze's HTML report, written beside the firmware (report.html); returns its path."""
    from . import api, artifact
    from .analyze import analyze

    qm = artifact.load(model)
    a = analyze(qm, api.calibration_data(qm), sizes, profile, count_kind)
    return api.write_report(qm, a, os.path.join(out, "report.html"))


def cmd_analyze(args) -> int:
    import tempfile

    from . import api

    model, board, out = _resolve(args)
    if args.profile and not (board != "host" or args.port):
        raise NupesError("--profile runs the model on an emulated board: add --board stm32 (or use --port)")
    scratch_dir = None
    if not args.output:  # build aside: the project's build/BOARD (and the report.html in it) stays as it is
        scratch_dir = tempfile.mkdtemp(prefix="nupes-analyze-")
        out = os.path.join(scratch_dir, "build")
    try:
        qm, a = api.analyze(model, args.data, None if board == "host" else board, out, args.profile, args.port, args.n)
    except NupesError as e:
        if "overflowed" not in str(e):
            raise
        qm, a = api.analyze(model, args.data, None, out, False, None, args.n)  # the table, without the board
        a.notes.append(f"does not fit {board}: {str(e).split(': ', 1)[-1][:300]}; try `nupes-edge quantize ... "
                       "--flash-budget SIZE` (bits chosen to fit) or fewer --wbits, or `build --ram-budget` for RAM")
    finally:
        if scratch_dir:
            import shutil

            shutil.rmtree(scratch_dir, ignore_errors=True)
    obj = a.as_dict()
    text = a.text()
    if args.html:
        obj["html"] = api.write_report(qm, a, args.html, args.layer)
        text += f"\nreport: {args.html}"
    _emit(obj, args.json, text)
    return 0


def _verify_exit(report, as_json: bool, where: str) -> int:
    o = report.original
    if report.mismatches:
        verdict = f"FAIL: {report.mismatches} of {report.n} outputs differ from the integer reference"
    elif o and o.get("mismatches"):
        verdict = (f"FAIL: {o['mismatches']} of {report.n} outputs differ from the original .tflite under TFLite Micro "
                   "(the model claims to keep the file exactly)")
    elif o and o.get("what") == "kept":
        verdict = "PASS: bit-exact with the integer reference and with the original .tflite (TFLite Micro)"
    else:
        verdict = "PASS: bit-exact with the integer reference"
    _emit(report.as_dict(), as_json, f"verify on {where}: {verdict}\n" + report.text())
    return 1 if report.failed else 0


def cmd_verify(args) -> int:
    from . import api

    model, board, _ = _resolve(args)
    args.data = _data(args)
    if args.port:
        r = api.verify_port(model, args.port, args.data, args.n, profile=args.profile, timeout=args.timeout)
        return _verify_exit(r, args.json, args.port)
    if board != "host":
        raise NupesError(f"verify on '{board}' needs --port (printed by `nupes-edge flash`), or use `nupes-edge run`")
    r = api.verify_host(model, args.data, args.n, sanitize=args.sanitize, dsp=args.dsp)
    return _verify_exit(r, args.json, "host")


def cmd_run(args) -> int:
    from . import api

    model, board, out = _resolve(args)
    args.data = _data(args)
    if board == "host":
        return _verify_exit(api.verify_host(model, args.data, args.n), args.json, "host")
    fb, r = api.run_emulated(model, board, out, args.data, args.n, profile=args.profile, ram_budget=args.ram_budget)
    report = _report_beside(model, out, {**fb.sizes, "board": fb.board.name}, r.profile or None, r.count_kind)
    if not args.json:
        print(fb.text() + f"\n  report: {report}", file=sys.stderr)
    return _verify_exit(r, args.json, f"{fb.board.name} (QEMU {fb.board.qemu['machine']})")


def cmd_flash(args) -> int:
    from . import boards, emulators, flash

    if args.stop:
        pids = emulators.stop_all()
        if not pids:
            raise NupesError("no emulator started from this folder is running")
        print(f"stopped {len(pids)} emulator{'s' if len(pids) > 1 else ''} (pid {', '.join(map(str, pids))})")
        return 0
    model, board_name, out = _resolve(args)
    board = boards.get(board_name)
    elf = args.elf or os.path.join(out, "firmware.elf")
    probe = args.probe or ("qemu" if board.emulated else "auto")
    in_project = not args.model
    model_arg = "" if in_project else f" {model}"
    if not os.path.isfile(elf):  # the hint names what was given, so it works when pasted
        raise NupesError(f"{elf}: no such firmware; run `nupes-edge build{model_arg} --board {board_name}` first")
    if probe == "qemu":
        emulators.refuse_if_running()
        q = flash.start_qemu(board, elf, max_seconds=args.max_seconds, detach=True)
        emulators.add({"pid": q.proc.pid, "port": q.port, "elf": elf})
        _emit({"probe": "qemu", "port": q.url, "pid": q.proc.pid}, args.json,
              f"QEMU {board.qemu['machine']} running {elf}\n  serial: {q.url}  (pid {q.proc.pid}; "
              f"`nupes-edge flash --stop` ends it)\n  next: nupes-edge verify{model_arg} --port {q.url}")
        return 0
    tool = flash.flash_probe(board, elf, elf[:-4] + ".bin", probe)
    _emit({"probe": tool, "board": board.name, "elf": elf}, args.json, f"flashed {elf} to {board.name} with {tool}")
    return 0


def cmd_export(args) -> int:
    from . import api

    n = api.export_tflite(_project_model(args), args.output, args.format)
    _emit({"output": args.output, "format": args.format, "bytes": n}, args.json,
          f"wrote {args.output} ({args.format}, {n} bytes)")
    return 0


def cmd_init(args) -> int:
    from . import project

    path = project.init(args.folder, args.example, args.method, args.wbits, args.board, args.model, args.data)
    print(f"wrote {path}\nnext: cd {args.folder} && nupes-edge build --board {args.board}")
    return 0


def cmd_boards(args) -> int:
    from . import boards

    rows = [{"name": "host", "aliases": [], "emulated": False, "description": "this machine (gcc), for bit-exact tests"}]
    rows += [{"name": b.name, "aliases": b.aliases, "emulated": b.emulated, "description": b.description,
              "flash_bytes": b.flash_bytes, "ram_bytes": b.ram_bytes, "cpu": b.cpu} for b in boards.all_boards()]
    def memory(r):
        return f"{r['flash_bytes'] // 1024} K / {r['ram_bytes'] // 1024} K" if "flash_bytes" in r else "-"

    lines = [f"{'board (aliases)':<26} {'':<16} {'flash / RAM':<16} description"]
    lines += [f"{r['name'] + (' (' + ', '.join(r['aliases']) + ')' if r['aliases'] else ''):<26} "
              f"{'emulated (QEMU)' if r['emulated'] else '':<16} {memory(r):<16} {r['description']}" for r in rows]
    _emit({"boards": rows}, args.json, "\n".join(lines))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="nupes-edge", description="NUPES power-exponent quantization for microcontrollers")
    p.add_argument("--debug", action="store_true", help="on an internal error (exit 3), print its traceback")
    p.add_argument("--version", action="version", version=f"nupes-edge {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    q = sub.add_parser("quantize", help="quantize a model into a model.nq")
    q.add_argument("model", help="a torch.export .pt2 file (torch.export.save(torch.export.export(net, (x,)), "
                                 "'net.pt2'); see docs/api.md), a float or int8 .tflite, or a bundled example "
                                 "name (digits, mnist5k)")
    q.add_argument("--data", help="calibration data: .npz with x, y (x as the model takes it: N x C x H x W "
                                  "for PyTorch, N x H x W x C for .tflite), or a bundled name (its calib split); "
                                  "not needed for an int8 .tflite with a data-free method (its own activation "
                                  "quantization is kept)")
    q.add_argument("--recalibrate", action="store_true",
                   help="an int8 .tflite: compute the activation quantization again from --data instead of keeping "
                        "the file's (by default uniform W8 keeps the file's model exactly; docs/tflite.md)")
    q.add_argument("--keep-softmax", action="store_true", default=None,
                   help="a model ending in Softmax runs it on the device and outputs int8 probabilities (TFLite "
                        "Micro's arithmetic) instead of the logits; on by default for a kept int8 .tflite")
    q.add_argument("--method", choices=METHODS, default="nupes",
                   help="nupes (learned codes and exponent, needs data), powerquant (data-free exponent search), "
                        "adaround, uniform (min-max), uniform-mse (MSE clipping); default nupes (docs/quantization.md)")
    q.add_argument("--wbits", type=_wbits, default=4, help="weight bits, 2..8 (default 4)")
    q.add_argument("--layer-wbits", type=_bits_override, action="append", metavar="LAYER=BITS",
                   help="per-layer weight bits (repeatable); with --flash-budget, the layers pinned")
    q.add_argument("--flash-budget", type=_flash_size, metavar="SIZE",
                   help="choose each layer's weight bits (2..8) so the model's flash (weights, tables, bias and "
                        "requantization, as codegen --json counts them) fits SIZE bytes, e.g. 24576, 24K, 24KiB "
                        "(K = KB = KiB = 1,024 B); replaces --wbits (docs/mixed_precision.md)")
    q.add_argument("--levels", choices=("int16", "int8"), default="int16",
                   help="the weight tables' levels: int16 (default), or for the convolutions Helium multiplies int8 times a power of two, which the "
                        "Cortex-M55's Helium kernels multiply directly (nupes W4 models 2.1-3.5x faster there; "
                        "non-uniform 3- to 8-bit levels a little coarser; docs/numerics.md)")
    q.add_argument("--state", choices=("reset", "carry"), default="reset",
                   help="an LSTM's / SVDF's state: reset (default: every inference from the reset state, a "
                        "whole-sequence model) or carry (each inference continues from the previous one's state, "
                        "as TFLite Micro runs a streaming model; verify/run/eval take the inputs as one sequence; "
                        "docs/tflite.md)")
    q.add_argument("--seed", type=_bounded(int, 0, (1 << 31) - 1, "--seed"), default=0, help="random seed of the learned methods (default 0)")
    q.add_argument("-o", "--output", required=True, help="the model.nq to write")
    q.add_argument("--quiet", action="store_true", help="no progress on stderr")
    q.add_argument("--json", action="store_true", help="print one JSON object on stdout (progress stays on stderr)")
    q.set_defaults(func=cmd_quantize)

    e = sub.add_parser("eval", help="accuracy of a model.nq: float, fake-quant, integer reference")
    e.add_argument("model", nargs="?", help="a model.nq (default: the project's, in a project folder)")
    e.add_argument("--data", help="evaluation data: .npz with x, y, or a bundled name (its test split); "
                                  "default in a project: its test data")
    e.add_argument("--json", action="store_true", help="print one JSON object on stdout (progress stays on stderr)")
    e.set_defaults(func=cmd_eval)

    c = sub.add_parser("codegen", help="generate the C model library from a model.nq")
    c.add_argument("model", nargs="?", help="a model.nq (default: the project's, in a project folder)")
    c.add_argument("-o", "--output", required=True, help="output folder (written whole; must be new or a previous codegen's)")
    c.add_argument("--name", help="C name of the model (default: the model's name)")
    c.add_argument("--data", help="data whose first calibration input example_main.c embeds (default: the data the "
                                  "model was calibrated on, when found; else a zero input)")
    c.add_argument("--json", action="store_true", help="print one JSON object on stdout (progress stays on stderr)")
    c.set_defaults(func=cmd_codegen)

    b = sub.add_parser("build", help="generate C and compile it for a board (in a project folder: quantize first)")
    b.add_argument("model", nargs="?", help="a model.nq (default: the project's model from nupes-edge.toml)")
    b.add_argument("--board", help="target board: host, stm32, ... (`nupes-edge boards`)")
    b.add_argument("-o", "--output", help="output folder (default build/BOARD)")
    b.add_argument("--sanitize", action="store_true", help="host: AddressSanitizer + UBSan")
    b.add_argument("--dsp", action="store_true", help="host: compile the Cortex-M DSP path with emulated intrinsics")
    b.add_argument("--ram-budget", type=_flash_size, metavar="SIZE",
                   help="bytes of arena + scratch the model may use, e.g. 96K: the fastest plan that fits (a "
                        "budget below the least-RAM plan's need is an error naming it; default: the fastest plan, "
                        "the least-RAM one when the board's RAM would overflow)")
    b.add_argument("--force", action="store_true", help="rebuild even when nothing changed since the last build")
    b.add_argument("--json", action="store_true", help="print one JSON object on stdout (progress stays on stderr)")
    b.set_defaults(func=cmd_build)

    an = sub.add_parser("analyze", help="per-layer report of a model.nq: bytes, arena, SQNR, counts; --html")
    an.add_argument("model", nargs="?", help="a model.nq (default: the project's model from nupes-edge.toml)")
    an.add_argument("--board", help="build the firmware for this board and report its real flash and RAM and "
                                    "whether it fits (default: no build)")
    an.add_argument("--profile", action="store_true",
                    help="also run -n inferences on the (emulated) board and report per-layer instruction counts")
    an.add_argument("--port", help="a running board's serial port (e.g. /dev/ttyACM0): per-layer cycle counts")
    an.add_argument("-n", type=_bounded(int, 1, 1000, "-n"), default=5, help="inferences for --profile / --port (default 5)")
    an.add_argument("--data", help="data for the per-layer SQNR (default: the model's calibration data, when found)")
    an.add_argument("--html", metavar="REPORT.html", help="also write the self-contained HTML report")
    an.add_argument("--layer", help="the weight layer whose histogram the HTML report draws (default: the largest)")
    an.add_argument("-o", "--output", help="build folder for --board (default build/BOARD)")
    an.add_argument("--json", action="store_true", help="print one JSON object on stdout (progress stays on stderr)")
    an.set_defaults(func=cmd_analyze)

    f = sub.add_parser("flash", help="put the built firmware on a board (QEMU for emulated boards)")
    f.add_argument("model", nargs="?", help="a model.nq (default: the project's)")
    f.add_argument("--board", help="board (default: the project's)")
    f.add_argument("--probe", choices=("qemu", "pyocd", "stlink", "openocd", "auto"),
                   help="how to flash: qemu (the emulated board), a real probe, or auto (default: the project's or qemu)")
    f.add_argument("--elf", help="firmware to flash (default build/BOARD/firmware.elf)")
    f.add_argument("-o", "--output", help=argparse.SUPPRESS)
    f.add_argument("--max-seconds", type=_bounded(float, 1, 86400, "--max-seconds"), default=3600, help="QEMU: stop by itself after this long")
    f.add_argument("--stop", action="store_true", help="stop the emulator started from this folder")
    f.add_argument("--json", action="store_true", help="print one JSON object on stdout (progress stays on stderr)")
    f.set_defaults(func=cmd_flash)

    for cmd_name, fn, hlp in (("verify", cmd_verify, "compare a board's outputs with the integer reference bit for bit"),
                              ("run", cmd_run, "build + flash to the emulator + verify, then stop the emulator")):
        v = sub.add_parser(cmd_name, help=hlp)
        v.add_argument("model", nargs="?", help="a model.nq (default: the project's)")
        v.add_argument("--board", help="board (default: the project's, else host)")
        v.add_argument("--data", help="inputs: .npz or bundled name (default: the model's data set, test split), or 'random' (random int8 inputs; top-1 then means agreement with the float model)")
        v.add_argument("-n", type=_bounded(int, 1, 20000, "-n"), default=200, help="number of inputs (default 200)")
        v.add_argument("--profile", action="store_true", help="per-layer counts from the profiling hook")
        if cmd_name == "run":
            v.add_argument("--ram-budget", type=_flash_size, metavar="SIZE",
                           help="bytes of arena + scratch the model may use (as build --ram-budget)")
        v.add_argument("-o", "--output", help=argparse.SUPPRESS)
        v.add_argument("--json", action="store_true", help="print one JSON object on stdout (progress stays on stderr)")
        if cmd_name == "verify":
            v.add_argument("--port", help="serial port of a running board: /dev/ttyACM0 or socket://HOST:PORT")
            v.add_argument("--timeout", type=_bounded(float, 0.1, 600, "--timeout"), default=5.0, help="seconds to wait for each reply")
            v.add_argument("--sanitize", action="store_true", help="host: AddressSanitizer + UBSan")
            v.add_argument("--dsp", action="store_true", help="host: the DSP path with emulated intrinsics")
        v.set_defaults(func=fn)

    x = sub.add_parser("export-tflite", help="write a model.nq as a TFLite flatbuffer (float, int8 or tflm-lut)")
    x.add_argument("model", nargs="?", help="a model.nq (default: the project's, in a project folder)")
    x.add_argument("-o", "--output", required=True, help="the .tflite to write")
    x.add_argument("--format", choices=("float", "int8", "tflm-lut"), default="int8",
                   help="float: NUPES-dequantized float32 weights; int8 (default): fully-int8 (bit-exact with TFLite "
                        "Micro for uniform layers); tflm-lut: int8 with LUT-compressed b-bit weights (TFLite Micro only)")
    x.add_argument("--json", action="store_true", help="print one JSON object on stdout (progress stays on stderr)")
    x.set_defaults(func=cmd_export)

    i = sub.add_parser("init", help="create a project folder with nupes-edge.toml")
    i.add_argument("folder", help="the project folder (created if missing)")
    i.add_argument("--example", choices=("digits", "mnist5k"), help="bundled model and data (default mnist5k)")
    i.add_argument("--model", help="your own model instead: a .pt2 (torch.export) or a .tflite file")
    i.add_argument("--data", help="with --model: calibration data, an .npz with x as the model takes it (not needed "
                                  "for an int8 .tflite, whose own quantization is then kept)")
    i.add_argument("--method", choices=METHODS, help="quantization method (default nupes; uniform for an int8 "
                                                     ".tflite without --data)")
    i.add_argument("--wbits", type=_wbits, help="weight bits, 2..8 (default 4; 8 for an int8 .tflite without --data)")
    i.add_argument("--board", default="stm32", help="target board, see `nupes-edge boards` (default stm32)")
    i.set_defaults(func=cmd_init)

    bl = sub.add_parser("boards", help="list the boards")
    bl.add_argument("--json", action="store_true", help="print one JSON object on stdout (progress stays on stderr)")
    bl.set_defaults(func=cmd_boards)

    d = sub.add_parser("demo", help="quantize a bundled example with several methods and compare them")
    d.add_argument("--example", default="mnist5k", choices=("digits", "mnist5k"), help="bundled example (default mnist5k)")
    d.add_argument("--methods", default="uniform,powerquant,nupes", help="comma-separated methods to compare")
    d.add_argument("--wbits", type=_wbits, default=4, help="weight bits, 2..8 (default 4)")
    d.add_argument("--out", default="out", help="folder for the model.nq files and builds (default out/)")
    d.add_argument("--board", default="stm32", help="emulated board to verify the last method on, or 'none'")
    d.add_argument("-n", type=_bounded(int, 1, 20000, "-n"), default=200, help="inputs to verify on the board (default 200)")
    d.add_argument("--json", action="store_true", help="print one JSON object on stdout (progress stays on stderr)")
    d.set_defaults(func=cmd_demo)
    return p


def _internal_error(e: BaseException, debug: bool) -> int:
    """A bug, not the user's mistake: one line, the traceback in a log file (or on stderr with --debug)."""
    import tempfile
    import traceback

    text = "".join(traceback.format_exception(e))
    if debug:
        sys.stderr.write(text)
        print(f"nupes-edge: internal error (a bug): {type(e).__name__}: {e}", file=sys.stderr)
        return 3
    fd, log = tempfile.mkstemp(prefix="nupes-edge-crash-", suffix=".log")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    print(f"nupes-edge: internal error (a bug): {type(e).__name__}: {str(e)[:200]}; traceback in {log}",
          file=sys.stderr)
    return 3


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    debug = "--debug" in argv
    args = build_parser().parse_args([a for a in argv if a != "--debug"])
    try:
        return args.func(args)
    except NupesError as e:
        print(f"nupes-edge: error: {safe_text(e)}", file=sys.stderr)
        return 2
    except OSError as e:  # disk full, read-only folder, permissions: the environment, with path and reason
        where = f"{e.filename}: " if e.filename else ""
        print(f"nupes-edge: error: {safe_text(where)}{safe_text(e.strerror or e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("nupes-edge: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - everything else is a bug: say so, exit 3
        return _internal_error(e, debug)


if __name__ == "__main__":
    sys.exit(main())
