"""`nupes-edge analyze`: a model, layer by layer, as the code generator lays it out.

Per layer: the C kernel, shapes, MACs, parameters, bits, exponent a and table shift G, the flash
bytes of its packed weights, tables and bias + requantization (they add up to `codegen --json`),
its output tensor's bytes and place in the arena, the output error of the integer reference
against the float model on calibration data (SQNR), and, from a device run, its instruction or
cycle count. Totals: params, MACs, flash and RAM, and, after a build, whether the firmware fits
the board.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np

from . import torch_exec
from .codegen.plan import ADD_TABLE_BYTES, DEFAULT_BANDS, Plan, plan
from .evaluate import sqnr_db
from .intref import quantize_input, run_int
from .qmodel import QuantModel
from .report import table

SQNR_SAMPLES = 128  # calibration inputs the per-layer SQNR is measured on


@dataclass
class LayerRow:
    index: int
    name: str
    op: str
    kernel: str
    in_shape: list
    out_shape: list
    macs: int = 0
    params: int = 0
    bits: int | None = None
    a: float | None = None
    G: int | None = None
    weight_bytes: int = 0  # packed codes + the guard byte
    table_bytes: int = 0  # power table, dense pair table, add rescaling tables
    meta_bytes: int = 0  # bias + requantization, 12 B per output channel
    act_bytes: int = 0  # the output tensor (int8, HWC)
    arena: str = ""  # where the output lives: "[offset, end)" in the arena, or "in" / "out"
    arena_offset: int | None = None
    sqnr_db: float | None = None
    count: int | None = None  # instructions (emulated) or cycles (real board), one inference


@dataclass
class Analysis:
    model: str
    method: str
    rows: list[LayerRow]
    totals: dict
    plan: Plan = field(repr=False)
    count_kind: str | None = None
    notes: list[str] = field(default_factory=list)
    data_label: str = "the calibration data"  # what the SQNR column was measured on

    def as_dict(self) -> dict:
        return {"model": self.model, "method": self.method, "layers": [asdict(r) for r in self.rows],
                "totals": self.totals, "count_kind": self.count_kind, "notes": self.notes}

    def text(self) -> str:
        cols = [("index", "#", "d"), ("name", "layer", "s"), ("kernel", "kernel", "s"), ("shape", "out shape", "s"),
                ("macs", "MACs", ","), ("params", "params", ","), ("bits", "bits", "s"), ("a", "a", "s"),
                ("G", "G", "s"), ("weight_bytes", "weights B", ","), ("table_bytes", "tables B", ","),
                ("meta_bytes", "bias+rq B", ","), ("act_bytes", "act B", ","), ("arena", "arena", "s"), ("sqnr", "SQNR dB", "s")]
        if self.count_kind:
            cols.append(("count", "count", ","))
        rows = []
        for r in self.rows:
            d = asdict(r)
            d.update(shape="x".join(map(str, r.out_shape)), bits="" if r.bits is None else str(r.bits),
                     a="" if r.a is None else f"{r.a:.3f}", G="" if r.G is None else str(r.G),
                     sqnr="" if r.sqnr_db is None else ("inf" if math.isinf(r.sqnr_db) else f"{r.sqnr_db:.1f}"),
                     count=r.count)
            rows.append(d)
        t = self.totals
        lines = [f"{self.model} ({self.method}): {len(self.rows)} layers", table(rows, cols), "",
                 f"params {t['params']:,}, MACs {t['macs']:,}",
                 f"model flash {t['model_flash_bytes']:,} B: weights {t['flash_weights_bytes']:,} B, tables "
                 f"{t['flash_tables_bytes']:,} B, bias+requant {t['flash_meta_bytes']:,} B",
                 f"RAM: arena {t['arena_bytes']:,} B + scratch {t['scratch_bytes']:,} B"
                 + (f" + state {t['state_bytes']:,} B" if t.get("state_bytes") else "")
                 + (f" + stack {t['stack_bytes']:,} B" if t.get("stack_bytes") is not None else "")]
        if t.get("board"):
            lines.append(f"firmware on {t['board']}: flash {t['flash_used']:,} of {t['flash_bytes']:,} B "
                         f"(margin {t['flash_bytes'] - t['flash_used']:,} B; runtime, board and startup code "
                         f"{t['code_bytes']:,} B), RAM {t['ram_used']:,} of {t['ram_bytes']:,} B (margin "
                         f"{t['ram_bytes'] - t['ram_used']:,} B): {'fits' if t['fits'] else 'DOES NOT FIT'}")
        if self.count_kind:
            lines.append(f"{self.count_kind.replace('_', ' ')}: {t['count']:,} in the layers"
                         + (f", {t['count_inference']:,} per inference" if t.get("count_inference") else ""))
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)


def lifetimes(qm: QuantModel, p: Plan) -> dict[str, tuple[int, int]]:
    """Arena tensor -> (first step that writes it, last step that reads it), in schedule steps: the
    planner's own, from which it placed the tensors."""
    return dict(p.lifetimes)


def layer_sqnr(qm: QuantModel, x: np.ndarray) -> dict[str, float]:
    """Per tensor: the integer reference's dequantized values against the float model's (dB)."""
    import torch

    x = np.ascontiguousarray(x[:SQNR_SAMPLES], np.float32)
    floats: dict[str, np.ndarray] = {}
    with torch.no_grad():
        torch_exec.run(qm.graph, torch.from_numpy(x), record=lambda n, t: floats.__setitem__(n, t.numpy().copy()))
    ints: dict[str, np.ndarray] = {}
    q = qm.input_q
    run_int(qm, quantize_input(x, q.scale, q.zero_point), record=lambda n, t: ints.__setitem__(n, t))
    out = {}
    for name, qv in ints.items():
        aq = qm.act.get(name)
        if aq is None or name not in floats:
            continue
        real = (qv.astype(np.float64) - aq.zero_point) * aq.scale
        out[name] = sqnr_db(floats[name].astype(np.float64).reshape(real.shape), real)
    return out


def analyze(qm: QuantModel, x_calib: np.ndarray | None = None, sizes: dict | None = None,
            profile: list[dict] | None = None, count_kind: str | None = None,
            data_label: str = "the calibration data", inference_count: int | None = None) -> Analysis:
    """The per-layer view. x_calib: data for the SQNR column (None: left empty). sizes: a firmware
    build's sizes (FirmwareBuild.sizes). profile: per-layer counts from a device run."""
    built = sizes or {}  # a board build's own plan (the least-RAM one, tiled to its bands), else the fastest
    bands = built.get("max_bands", None if built.get("ram_plan", "fastest") == "fastest" else DEFAULT_BANDS)
    p = plan(qm, inplace=bands is not None, max_bands=DEFAULT_BANDS if bands is None else bands)
    g = qm.graph
    alias = p.storage
    nodes = {n.name: n for n in g.nodes}
    data = {L.node_name: L for L in p.layers}
    adds = dict(zip([s.node_name for s in p.steps if s.op == "nupes_add"], p.adds))
    sqnr = layer_sqnr(qm, x_calib) if x_calib is not None else {}
    counts = {d.get("layer"): int(d["count"]) for d in profile or []}
    rows = []
    for s in p.steps:
        n = nodes[s.node_name]
        r = LayerRow(s.index, n.name, n.op, s.op, [list(g.shapes[t]) for t in n.inputs][0], list(g.shapes[n.output]))
        r.act_bytes = int(np.prod(g.shapes[n.output]))
        t = alias.get(n.output, n.output)
        if t in p.offsets:
            r.arena_offset = int(p.offsets[t])
            r.arena = f"[{p.offsets[t]}, {p.offsets[t] + p.sizes[t]})"
        else:
            r.arena = "out" if t == g.output_name else "in"
        if n.name in data:
            L = data[n.name]
            r.params = int(np.prod(n.weight.shape))
            r.macs = int(np.prod(g.shapes[n.output])) * int(np.prod(n.weight.shape[1:]))
            r.bits, r.a, r.G = int(L.bits), float(L.p.a), int(L.p.G)
            r.weight_bytes = int(L.packed.size)
            r.table_bytes = int((0 if L.lut is None else L.lut.size * 2) + (0 if L.pairs is None else L.pairs.size * 4))
            r.meta_bytes = int(L.bias.size * 12)
        elif n.name in adds:
            r.table_bytes = 0 if adds[n.name] in p.table_free_adds else ADD_TABLE_BYTES
        r.sqnr_db = sqnr.get(n.output)
        r.count = counts.get(n.name)
        rows.append(r)
    rep = p.report
    totals = {"params": rep["params"], "macs": rep["macs"],
              "flash_weights_bytes": rep["flash_weights_bytes"], "flash_tables_bytes": rep["flash_tables_bytes"],
              "flash_meta_bytes": rep["flash_meta_bytes"],
              "model_flash_bytes": rep["flash_weights_bytes"] + rep["flash_tables_bytes"] + rep["flash_meta_bytes"],
              "arena_bytes": rep["arena_bytes"], "scratch_bytes": rep["scratch_bytes"], "stack_bytes": None}
    if rep.get("state_bytes"):  # a carry model's static state (a reset model's totals are unchanged)
        totals["state_bytes"] = rep["state_bytes"]
    notes = []
    if sizes:
        from . import boards as board_defs
        from .firmware import STACK_BYTES

        try:
            stack = board_defs.get(sizes["board"]).stack_bytes if sizes.get("board") else STACK_BYTES
        except Exception:  # a board name that is not ours (sizes from elsewhere): the default
            stack = STACK_BYTES
        totals.update(board=sizes.get("board"), flash_used=sizes["flash_used"], flash_bytes=sizes["flash_bytes"],
                      ram_used=sizes["ram_used"], ram_bytes=sizes["ram_bytes"], stack_bytes=stack,
                      code_bytes=sizes["flash_used"] - totals["model_flash_bytes"],
                      fits=sizes["flash_used"] <= sizes["flash_bytes"] and sizes["ram_used"] <= sizes["ram_bytes"])
    elif profile:  # counts read from a board (--port) whose firmware was built elsewhere
        notes.append("the firmware's flash and RAM are not known here: add --board NAME to build it and see them")
    else:
        notes.append("not built for a board: pass --board to build the firmware and see its real flash and RAM")
    if profile:
        totals["count"] = int(sum(counts.values()))
        if inference_count:  # what run / verify report: the layers plus the model function around them
            totals["count_inference"] = int(inference_count)
            notes.append(f"the layers add up to {totals['count']:,} {count_kind or 'counts'}; the whole inference (as run "
                         f"and verify report it) is {inference_count:,}: the other {inference_count - totals['count']:,} "
                         "are the model function around the layers (the calls, the output copy)")
    if x_calib is None:
        notes.append("no calibration data found: the SQNR column is empty (pass --data)")
    return Analysis(qm.name, qm.method, rows, totals, p, count_kind if profile else None, notes, data_label)
