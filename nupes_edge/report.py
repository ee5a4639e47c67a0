"""Plain-text tables for terminal output."""
from __future__ import annotations


def table(rows: list[dict], columns: list[tuple[str, str, str]]) -> str:
    """``columns``: (key, header, format spec). Right-aligned, one line per row."""
    cells = [[h for _, h, _ in columns]]
    for r in rows:
        cells.append([format(r[k], f) if r.get(k) is not None else "-" for k, _, f in columns])
    widths = [max(len(c[i]) for c in cells) for i in range(len(columns))]
    lines = ["  ".join(c[i].rjust(widths[i]) for i in range(len(columns))) for c in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


ACCURACY_COLUMNS = [("example", "example", "s"), ("method", "method", "s"), ("wbits", "W", "d"),
                    ("float_top1", "float", ".2%"), ("fakequant_top1", "fake-quant", ".2%"),
                    ("int_top1", "int ref", ".2%"), ("agreement", "agree", ".2%"),
                    ("sqnr_db", "SQNR dB", ".1f"), ("seconds", "quant s", ".1f")]
