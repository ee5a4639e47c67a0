"""Render a QuantModel into a self-contained C model library (Jinja2 templates).

Python decides (codegen/plan.py), the templates only lay out prepared values.
Output: nupes_model_<name>.h, nupes_model_<name>.c, nupes_model_<name>_data.c (a prefix no runtime or
board file uses, so no model name can shadow one) and runtime/ with the kernels they call; with
``project``, also CMakeLists.txt, model.mk and example_main.c (codegen/project.py).
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import jinja2
import numpy as np

from .. import __version__
from ..errors import NupesError
from ..fileio import atomic_write_bytes
from ..qmodel import QuantModel
from .. import runtime_c
from ..intref.fixedpoint import multiply_by_quantized_multiplier
from .cvalues import c_comment, c_float, c_identifier, c_int, c_ints, c_string
from .plan import DEFAULT_BANDS, Plan, plan
from .project import PROJECT_FILES, render_project

# What a codegen folder may hold besides nupes_model_* files (a re-run may replace only these)
OWN_FILES = ("runtime", "nupes_host_runner.c") + PROJECT_FILES

TEMPLATES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "templates")
_env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), undefined=jinja2.StrictUndefined,
                          keep_trailing_newline=True, trim_blocks=False)

__all__ = ["generate", "plan", "c_identifier", "file_stem", "Generated", "PROJECT_FILES", "OWN_FILES"]


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


def file_stem(cname: str) -> str:
    """The generated files' common name stem for the C model name ``cname``."""
    return f"nupes_model_{cname}"


def _add_data(cname: str, a, tables: bool = True) -> dict:
    """An add layer's C data: its parameters and the two 256-entry tables the kernel reads,
    t[x + 128] = requant((x - zp) * 2^left_shift, mult, shift) for x = -128..127: each input's
    rescaling, computed with the reference's own arithmetic (``add`` in intref/reference.py)."""
    what, int32 = f"add '{cname}'", (-(1 << 31), (1 << 31) - 1)
    if not tables:  # computed per element (nupes_add_computed): (x - zp) * 2^(left_shift + 1 + max(shift, 0)) in int32
        for f in ("in1_shift", "in2_shift"):
            c_int(255 << (int(a.left_shift) + 1 + max(int(getattr(a, f)), 0)), *int32, f"{what}: input rescaling ({f})")
    x = np.arange(-128, 128, dtype=np.int64)
    t1, t2 = (c_ints(multiply_by_quantized_multiplier((x - int(zp)) * (1 << int(a.left_shift)), int(m), int(sh)),
                     *int32, f"{what}: input {i} rescaling table")
              for i, zp, m, sh in ((1, a.in1_zp, a.in1_mult, a.in1_shift), (2, a.in2_zp, a.in2_mult, a.in2_shift)))
    # the kernel requantizes sums s = t1[i] + t2[j]: it needs 2 * s * 2^max(out_shift, 0) in int32
    scale = 2 << max(int(a.out_shift), 0)
    for s in (int(t1.min()) + int(t2.min()), int(t1.max()) + int(t2.max())):
        c_int(s * scale, *int32, f"{what}: table sum {s} times {scale}")
    fields = ("in1_zp", "in2_zp", "in1_mult", "in1_shift", "in2_mult", "in2_shift", "out_mult", "out_shift",
              "left_shift", "out_zp", "act_min", "act_max")
    return {"cname": cname, "init": ", ".join(str(c_int(getattr(a, f), *int32, f"{what}: {f}")) for f in fields),
            "t1": _lines(t1, 8) if tables else None, "t2": _lines(t2, 8) if tables else None}


def render(qm: QuantModel, name: str | None = None, runner: bool = False,
           inplace: bool = False, max_bands: int = DEFAULT_BANDS) -> tuple[Plan, dict[str, str]]:
    """The generated sources as {relative path: text}. Text from the model file reaches them only
    escaped, in comments and string literals; numbers only checked (codegen/cvalues.py)."""
    p = plan(qm, name, inplace=inplace, max_bands=max_bands)
    g = qm.graph
    bits = sorted({L.bits for L in p.layers})
    digest = model_hash(qm)
    if not (isinstance(digest, str) and len(digest) == 64 and all(ch in "0123456789abcdef" for ch in digest)):
        raise NupesError(f"model hash {str(digest)[:70]!r} is not a SHA-256 hex digest")
    ctx = {
        "name": p.name, "NAME": p.name.upper(), "stem": file_stem(p.name), "version": __version__,
        "source": c_comment(qm.meta.get("name", "model")), "method": c_comment(qm.method),
        "bits_summary": "/".join(f"W{b}" for b in bits), "hash": digest,
        "softmax": bool(g.output_softmax), "input_size": p.input_size, "output_size": p.output_size,
        "input_shape_hwc": _hwc(p.input_shape), "output_shape_hwc": _hwc(p.output_shape),
        "input_scale": c_float(qm.input_q.scale, "input scale"),
        "input_zp": c_int(qm.input_q.zero_point, -128, 127, "input zero point"),
        "output_scale": c_float(qm.output_q.scale, "output scale"),
        "output_zp": c_int(qm.output_q.zero_point, -128, 127, "output zero point"),
        "arena_bytes": p.arena_bytes, "arena_naive_bytes": p.arena_naive_bytes,
        "scratch_bytes": p.scratch_entries * 2, "scratch_entries": p.scratch_entries,
        "arena_words": max(1, -(-p.arena_bytes // 4)), "scratch_words": max(1, -(-p.scratch_entries * 2 // 4)),
        "num_layers": len(p.steps),
        "steps": [{"index": st.index, "comment": c_comment(st.node_name), "literal": c_string(st.node_name),
                   "op": st.op, "call": st.call, "profiled": st.profiled} for st in p.steps],
        "layers": [L.cname for L in p.layers], "adds": list(p.adds), "lstms": list(p.lstms),
        "svdfs": list(p.svdfs), "states": p.states, "state_bytes": sum(st["bytes"] for st in p.states),
        "output_copy": f"arena + {p.offsets[_storage_of_output(qm)]}" if p.output_in_arena else None,
    }
    data_layers = [{
        "cname": L.cname, "node": c_comment(L.node_name), "bits": L.bits, "a": f"{float(L.p.a):.6g}", "G": int(L.p.G),
        "rows": L.bias.size, "row_bytes": L.row_bytes, "packed_len": L.packed.size,
        "packed": _lines(L.packed, 16, lambda v: f"0x{v:02x}"), "lut_len": 0 if L.lut is None else L.lut.size,
        "lut": None if L.lut is None else ", ".join(str(v) for v in L.lut.tolist()), "bias": _lines(L.bias, 8), "mult": _lines(L.mult, 6),
        "shift": _lines(L.shift, 16), "in_zp": int(L.p.in_zp), "out_zp": int(L.p.out_zp),
        "act_min": int(L.p.act_min), "act_max": int(L.p.act_max), "lshift": int(L.lshift),
        "pairs": None if L.pairs is None else _lines(L.pairs, 8, lambda v: f"0x{v:08x}u"),
        "pairs_len": 0 if L.pairs is None else L.pairs.size,
    } for L in p.layers]
    data_adds = [_add_data(k, a, k not in p.table_free_adds) for k, a in p.adds.items()]
    data_lstms = [{"cname": k, "init": d["init"], **{f: _lines(d[f], 24 if f.startswith("w_") else 8)
                                                     for f in ("w_in", "w_rec", "in_bias", "rec_bias")},
                   **{f"{f}_len": int(d[f].size) for f in ("w_in", "w_rec", "in_bias", "rec_bias")}}
                  for k, d in p.lstms.items()]
    svdf_arrays = ("w_feature", "feature_bias", "w_time", "bias")
    data_svdfs = [{"cname": k, "init": d["init"], **{f: _lines(d[f], 24 if f == "w_feature" else 8) for f in svdf_arrays},
                   **{f"{f}_len": int(d[f].size) for f in svdf_arrays}} for k, d in p.svdfs.items()]
    files = {
        f"{ctx['stem']}.h": _env.get_template("model.h.j2").render(ctx),
        f"{ctx['stem']}.c": _env.get_template("model.c.j2").render(ctx),
        f"{ctx['stem']}_data.c": _env.get_template("model_data.c.j2").render(
            {**ctx, "layers": data_layers, "adds": data_adds, "lstms": data_lstms,
             "svdfs": data_svdfs}),
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
    while producers[t].op in ("flatten", "reshape"):
        t = producers[t].inputs[0]
    return t


def generate(qm: QuantModel, out_dir: str, name: str | None = None, runner: bool = False, project: bool = False,
             example_input: np.ndarray | None = None, inplace: bool = False, max_bands: int = DEFAULT_BANDS) -> Generated:
    """Write the model library (and the C runtime under runtime/) into ``out_dir``. ``project``
    adds the build files and example_main.c (whose input is ``example_input``, one float sample in
    the model's layout, else a zero input): for the user's folder, not for our own builds, which
    compile every .c they find."""
    for d in (out_dir, os.path.join(out_dir, "runtime")):
        if os.path.islink(d):  # writing through it would land outside the output folder
            raise NupesError(f"{d}: is a symlink; nupes-edge writes its generated files only into real folders")
    p, files = render(qm, name, runner, inplace=inplace, max_bands=max_bands)
    if project:
        files.update(render_project(qm, p, file_stem(p.name), example_input))
    written = []
    for rel, text in files.items():
        atomic_write_bytes(os.path.join(out_dir, rel), text.encode())
        written.append(rel)
    rt = os.path.join(out_dir, "runtime")
    os.makedirs(rt, exist_ok=True)
    for src in runtime_c.sources() + runtime_c.headers():
        with open(src, "rb") as f:  # written beside and renamed: a symlink in its place is replaced, not followed
            atomic_write_bytes(os.path.join(rt, os.path.basename(src)), f.read())
        written.append(os.path.join("runtime", os.path.basename(src)))
    return Generated(p, out_dir, written)
