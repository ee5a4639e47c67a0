"""Progress bars on stderr: live on a terminal, a line every few seconds in logs."""
from __future__ import annotations

import sys


def bar(iterable=None, *, desc: str, unit: str = "it", total: int | None = None, enabled: bool = True):
    from tqdm import tqdm

    tty = sys.stderr.isatty()
    return tqdm(iterable, desc=desc, unit=unit, total=total, file=sys.stderr, disable=not enabled, leave=False,
                mininterval=0.2 if tty else 10.0, dynamic_ncols=tty)
