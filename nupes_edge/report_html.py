"""The analysis as one self-contained HTML file: the layer table and its plots as embedded PNGs,
readable offline (no external scripts, styles or images)."""
from __future__ import annotations

import base64
import html
import io
import json
import math
import os

import numpy as np

from .analyze import Analysis, lifetimes
from .qmodel import QuantModel

ACCURACY_JSON = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                             "benchmarks", "results", "accuracy.json")

_STYLE = """body{font-family:system-ui,sans-serif;margin:2em;color:#222}table{border-collapse:collapse;font-size:13px}
td,th{border:1px solid #ccc;padding:3px 7px;text-align:right}th{background:#f3f3f3}td.l{text-align:left}
img{max-width:100%;border:1px solid #eee;margin:.5em 0}.wide{max-width:100%;overflow-x:auto}.note{color:#666;font-size:13px}h2{margin-top:1.6em}"""

# Counts the plots that decoded and any script error into the hidden #selfcheck (tests read it from the DOM).
_SELFCHECK = """<script>
var errors = 0; window.addEventListener('error', function () { errors += 1; });
window.addEventListener('load', function () {
  var imgs = document.images, ok = 0;
  for (var i = 0; i < imgs.length; i++) { if (imgs[i].complete && imgs[i].naturalWidth > 0) ok += 1; }
  document.getElementById('selfcheck').textContent = 'plots loaded: ' + ok + ' of ' + imgs.length + '; script errors: ' + errors;
});
</script>"""


def _png(fig) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _figure(w=8.0, h=3.2):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(w, h))


def plot_sqnr(a: Analysis) -> str | None:
    rows = [r for r in a.rows if r.sqnr_db is not None]
    if not rows:
        return None
    fig, ax = _figure()
    vals = [min(r.sqnr_db, 80.0) for r in rows]
    ax.bar(range(len(rows)), vals, color=["#3b75af" if r.bits else "#9bb" for r in rows])
    ax.set_xticks(range(len(rows)), [r.name for r in rows], rotation=35, ha="right", fontsize=8)
    ax.set(ylabel="SQNR dB", title=f"Each layer's output: integer reference vs float model (on {a.data_label}; "
                                   "dark: weight layers)")
    ax.title.set_fontsize(9)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return _png(fig)


def plot_share(a: Analysis) -> str:
    counted = a.count_kind is not None
    vals = [(r.count or 0) if counted else r.macs for r in a.rows]
    total = max(sum(vals), 1)
    fig, ax = _figure()
    ax.bar(range(len(a.rows)), [100 * v / total for v in vals], color="#d08a3a")
    ax.set_xticks(range(len(a.rows)), [r.name for r in a.rows], rotation=35, ha="right", fontsize=8)
    what = a.count_kind.replace("_", " ") if counted else "MACs (no device run: pass --profile or --port for counts)"
    ax.set(ylabel="% of the inference", title=f"Each layer's share of {what}")
    ax.title.set_fontsize(9)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return _png(fig)


_BUFFERS = {"__tile_": "tile", "__scratch_": "scratch", "__group_": "channel group", "__rows_": "rows aside"}


def _arena_label(t: str, producer: dict) -> str:
    """A tensor by the layer that writes it; the plan's own buffers by what they are for."""
    return next((what for prefix, what in _BUFFERS.items() if t.startswith(prefix)), producer.get(t, t))


def _step_label(p, s) -> str:
    """A step's name, with how the least-RAM plan runs it (tiled, in place)."""
    if any(s.node_name in chain for chain, _, _ in p.tiled.values()):
        return f"{s.node_name} (tiled)"
    return f"{s.node_name} (in place)" if s.node_name in p.inplace else s.node_name


def plot_arena(a: Analysis, qm: QuantModel) -> str | None:
    p = a.plan
    if not p.offsets:
        return None
    span = lifetimes(qm, p)
    producer = {s.out_tensor: s.node_name for s in p.steps}
    import matplotlib
    from matplotlib.patches import Rectangle

    fig, ax = _figure(8.0, 3.8)
    cmap = matplotlib.colormaps["tab20"]
    for i, (t, off) in enumerate(sorted(p.offsets.items(), key=lambda kv: span.get(kv[0], (0, 0))[0])):
        first, last = span.get(t, (0, len(p.steps)))
        ax.add_patch(Rectangle((first - 0.45, off), last - first + 0.9, p.sizes[t], color=cmap(i % 20), alpha=0.8))
        ax.text(first - 0.4, off + p.sizes[t] / 2, _arena_label(t, producer), fontsize=7, va="center")
    ax.set_xlim(-0.6, len(p.steps) + 0.6)
    ax.set_ylim(0, max(p.arena_bytes, 1))
    ax.set_xticks(range(len(p.steps)), [_step_label(p, s) for s in p.steps], rotation=35, ha="right", fontsize=8)
    ax.set(ylabel="arena byte offset", title=f"Arena over the schedule: which tensor holds which bytes when "
                                             f"({p.arena_bytes:,} B; naive {p.arena_naive_bytes:,} B)")
    ax.title.set_fontsize(9)
    fig.tight_layout()
    return _png(fig)


def plot_weights(qm: QuantModel, layer: str) -> str:
    node = next(n for n in qm.graph.weight_nodes() if n.name == layer)
    lw = qm.weights[layer]
    alpha = np.asarray(lw.alpha, np.float64).reshape((-1,) + (1,) * (node.weight.ndim - 1))
    u = (node.weight / np.where(alpha > 0, alpha, 1.0)).ravel()
    qmax = (1 << (lw.bits - 1)) - 1
    levels = (np.arange(qmax + 1) / qmax) ** (1.0 / lw.a)
    fig, ax = _figure()
    ax.hist(np.clip(u, -1.5, 1.5), bins=120, color="#7a9cc6")
    for lv in np.concatenate([-levels[1:], levels]):
        ax.axvline(lv, color="#c0392b", lw=0.8, alpha=0.8)
    ax.set(xlabel="weight / channel scale alpha_c (clipped to ±1.5)", ylabel="weights",
           title=f"'{layer}': float weights and its {2 * qmax + 1} NUPES levels (red), {lw.bits} bits, a = {lw.a:.3f}")
    ax.title.set_fontsize(9)
    fig.tight_layout()
    return _png(fig)


def accuracy_rows(model: str, path: str = ACCURACY_JSON) -> list[dict]:
    """benchmarks/accuracy.py's rows for this model, where that file exists (a source checkout)."""
    if not os.path.isfile(path):
        return []
    try:
        rows = json.load(open(path))
    except (OSError, ValueError):
        return []
    return [r for r in rows if isinstance(r, dict) and r.get("example") == model]


def plot_accuracy(rows: list[dict], model: str) -> str | None:
    if not rows:
        return None
    fig, ax = _figure()
    for method in dict.fromkeys(r["method"] for r in rows):  # measured widths only: points, no lines between
        pts = sorted((r["wbits"], 100 * r["int_top1"]) for r in rows if r["method"] == method)
        ax.plot(*zip(*pts), marker="o", ls="none", label=method)
    ax.set_xticks(sorted({r["wbits"] for r in rows}))
    ax.axhline(100 * rows[0]["float_top1"], color="k", ls="--", lw=1, label="float")
    ax.set(xlabel="weight bits", ylabel="top-1 (%)", title=f"{model}: accuracy vs bits (benchmarks/accuracy.py)")
    ax.title.set_fontsize(9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return _png(fig)


def _fmt(v) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return "inf" if math.isinf(v) else f"{v:.3f}" if abs(v) < 10 else f"{v:.1f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def render(a: Analysis, qm: QuantModel, layer: str | None = None) -> str:
    """The report page. layer: the weight layer whose histogram is drawn (default: the largest)."""
    weight_layers = [r for r in a.rows if r.bits is not None]
    if layer is None and weight_layers:
        layer = max(weight_layers, key=lambda r: r.params).name
    e = html.escape
    cols = [("#", "index"), ("layer", "name"), ("op", "op"), ("kernel", "kernel"), ("in", "in_shape"),
            ("out", "out_shape"), ("MACs", "macs"), ("params", "params"), ("bits", "bits"), ("a", "a"), ("G", "G"),
            ("weights B", "weight_bytes"), ("tables B", "table_bytes"), ("bias+rq B", "meta_bytes"),
            ("act B", "act_bytes"), ("arena", "arena"), ("SQNR dB", "sqnr_db")]
    if a.count_kind:
        cols.append((a.count_kind.replace("_", " "), "count"))
    head = "".join(f"<th>{e(h)}</th>" for h, _ in cols)
    body = []
    for r in a.rows:
        cells = []
        for _, k in cols:
            v = getattr(r, k)
            v = "x".join(map(str, v)) if isinstance(v, list) else _fmt(v)
            cells.append(f"<td{' class=l' if k in ('name', 'op', 'kernel') else ''}>{e(v)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    t = a.totals
    totals = [f"params {t['params']:,}, MACs {t['macs']:,}",
              f"model flash {t['model_flash_bytes']:,} B (weights {t['flash_weights_bytes']:,}, tables "
              f"{t['flash_tables_bytes']:,}, bias+requant {t['flash_meta_bytes']:,})",
              f"RAM: arena {t['arena_bytes']:,} B + scratch {t['scratch_bytes']:,} B"
              + (f" + stack {t['stack_bytes']:,} B" if t.get("stack_bytes") else "")]
    if t.get("board"):
        totals.append(f"firmware on {t['board']}: flash {t['flash_used']:,} / {t['flash_bytes']:,} B, RAM "
                      f"{t['ram_used']:,} / {t['ram_bytes']:,} B: {'fits' if t['fits'] else 'does NOT fit'}")
    if a.count_kind:
        totals.append(f"{a.count_kind.replace('_', ' ')}: {t['count']:,} in the layers"
                      + (f", {t['count_inference']:,} per inference" if t.get("count_inference") else ""))
    plots = [("Per-layer output error", plot_sqnr(a)), ("Where the time goes", plot_share(a)),
             ("Arena map", plot_arena(a, qm)),
             (f"Weights of '{layer}'", plot_weights(qm, layer) if layer else None),
             ("Accuracy vs bits", plot_accuracy(accuracy_rows(a.model), a.model))]
    figs = []
    for title, src in plots:
        if src is None and title == "Accuracy vs bits":
            continue  # measured for the bundled examples only (benchmarks/accuracy.py): no empty section
        if src is None:
            why = {"Accuracy vs bits": "no benchmarks/results/accuracy.json rows for this model",
                   "Per-layer output error": "no calibration data (pass --data)"}.get(title, "nothing to draw")
            figs.append(f"<h2>{e(title)}</h2><p class=note>({e(why)})</p>")
        else:
            figs.append(f"<h2>{e(title)}</h2><img alt='{e(title)}' src='{src}'>")
    notes = "".join(f"<p class=note>{e(n)}</p>" for n in a.notes)
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>nupes-edge analyze: {e(a.model)}</title>"
            f"<style>{_STYLE}</style></head><body><h1>{e(a.model)} <small>({e(a.method)})</small></h1>"
            f"<div class=wide><table><tr>{head}</tr>{''.join(body)}</table></div>"
            + "".join(f"<p>{e(x)}</p>" for x in totals) + notes + "".join(figs)
            + f"<p id=selfcheck hidden>plots not checked (scripts off)</p>{_SELFCHECK}</body></html>")
