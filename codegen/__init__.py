"""Render a QuantModel into a self-contained C model library (Jinja2 templates).

Python decides (codegen/plan.py), the templates only lay out prepared values.
Output: <name>.h, <name>.c, <name>_data.c, and runtime/ with the kernels they call.
"""
from __future__ import annotations

import os
import shutil
from dataclasses import dataclass

import jinja2
import numpy as np

from .. import __version__
from ..fileio import atomic_write_bytes
from ..qmodel import QuantModel
from .. import runtime_c
from .plan import Plan, c_identifier, plan

TEMPLATES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "templates")
_env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), undefined=jinja2.StrictUndefined,
                          keep_trailing_newline=True, trim_blocks=False)

__all__ = ["generate", "plan", "c_identifier", "Generated"]


@dataclass
class Generated:
    plan: Plan
    out_dir: str
    files: list[str]  # every file written, relative to out_dir

    @property
    def report(self) -> dict:
        return self.plan.report


def _lines(values, per_line: int = 16, fmt=str) -> list[str]:
    vals = [fmt(v) for v in np.asarray(values).ravel().tolist()]
    return [", ".join(vals[i:i + per_line]) + "," for i in range(0, len(vals), per_line)]


def _hwc(shape) -> str:
    return "x".join(str(s) for s in (list(shape[1:]) + [shape[0]] if len(shape) == 3 else shape))


def render(qm: QuantModel, name: str | None = None, runner: bool = False) -> tuple[Plan, dict[str, str]]:
    """The generated sources as {relative path: text}."""
    p = plan(qm, name)
    g = qm.graph
    bits = sorted({L.bits for L in p.layers})
    ctx = {
        "name": p.name, "NAME": p.name.upper(), "version": __version__, "source": qm.meta.get("name", "model"),
        "method": qm.method, "bits_summary": "/".join(f"W{b}" for b in bits), "hash": model_hash(qm),
        "softmax": g.output_softmax, "input_size": p.input_size, "output_size": p.output_size,
        "input_shape_hwc": _hwc(p.input_shape), "output_shape_hwc": _hwc(p.output_shape),
        "input_scale": repr(float(qm.input_q.scale)), "input_zp": qm.input_q.zero_point,
        "output_scale": repr(float(qm.output_q.scale)), "output_zp": qm.output_q.zero_point,
        "arena_bytes": p.arena_bytes, "arena_naive_bytes": p.arena_naive_bytes,
        "scratch_bytes": p.scratch_entries * 2, "scratch_entries": p.scratch_entries,
        "num_layers": len(p.steps), "steps": p.steps,
        "layers": [L.cname for L in p.layers], "adds": list(p.adds),
        "output_copy": f"arena.b + {p.offsets[_storage_of_output(qm)]}" if p.output_in_arena else None,
    }
    data_layers = [{
        "cname": L.cname, "node": L.cname[len(p.name) + 1:], "bits": L.bits, "a": f"{L.p.a:.6g}", "G": L.p.G,
        "rows": L.bias.size, "row_bytes": L.row_bytes, "packed_len": L.packed.size,
        "packed": _lines(L.packed, 16, lambda v: f"0x{v:02x}"), "lut_len": L.lut.size,
        "lut": ", ".join(str(v) for v in L.lut.tolist()), "bias": _lines(L.bias, 8), "mult": _lines(L.mult, 6),
        "shift": _lines(L.shift, 16), "in_zp": L.p.in_zp, "out_zp": L.p.out_zp, "act_min": L.p.act_min,
        "act_max": L.p.act_max,
    } for L in p.layers]
    data_adds = [{"cname": k, "init": ", ".join(str(int(getattr(a, f))) for f in (
        "in1_zp", "in2_zp", "in1_mult", "in1_shift", "in2_mult", "in2_shift", "out_mult", "out_shift",
        "left_shift", "out_zp", "act_min", "act_max"))} for k, a in p.adds.items()]
    files = {
        f"{p.name}.h": _env.get_template("model.h.j2").render(ctx),
        f"{p.name}.c": _env.get_template("model.c.j2").render(ctx),
        f"{p.name}_data.c": _env.get_template("model_data.c.j2").render(
            {**ctx, "layers": data_layers, "adds": data_adds}),
    }
    if runner:
        files["nupes_host_runner.c"] = _env.get_template("host_runner.c.j2").render(ctx)
    return p, files


def model_hash(qm: QuantModel) -> str:
    """The model.nq hash (computed when the model was not loaded from or saved to a file)."""
    from .. import artifact

    if not qm.meta.get("hash"):
        qm.meta["hash"] = artifact.hash_of(qm)
    return qm.meta["hash"]


def _storage_of_output(qm: QuantModel) -> str:
    t = qm.graph.output_name
    producers = {n.output: n for n in qm.graph.nodes}
    while producers[t].op == "flatten":
        t = producers[t].inputs[0]
    return t


def generate(qm: QuantModel, out_dir: str, name: str | None = None, runner: bool = False) -> Generated:
    """Write the model library (and the C runtime under runtime/) into ``out_dir``."""
    p, files = render(qm, name, runner)
    written = []
    for rel, text in files.items():
        atomic_write_bytes(os.path.join(out_dir, rel), text.encode())
        written.append(rel)
    rt = os.path.join(out_dir, "runtime")
    os.makedirs(rt, exist_ok=True)
    for src in runtime_c.sources() + runtime_c.headers():
        shutil.copyfile(src, os.path.join(rt, os.path.basename(src)))
        written.append(os.path.join("runtime", os.path.basename(src)))
    return Generated(p, out_dir, written)
