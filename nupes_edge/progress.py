"""Progress on stderr: a live bar on a terminal; in a log (CI, `make demo > log`) one plain line
per step instead of bar redraws."""
from __future__ import annotations

import sys


def bar(iterable=None, *, desc: str, unit: str = "it", total: int | None = None, enabled: bool = True):
    from tqdm import tqdm

    tty = sys.stderr.isatty()
    if enabled and not tty:
        print(f"{desc} ...", file=sys.stderr, flush=True)
    return tqdm(iterable, desc=desc, unit=unit, total=total, file=sys.stderr, disable=not (enabled and tty), leave=False,
                mininterval=0.2 if tty else 10.0, dynamic_ncols=tty)
