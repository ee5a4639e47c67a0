"""The README's measured blocks: `<!-- NAME:begin -->` ... `<!-- NAME:end -->`, each rewritten only by
the benchmark that measures it (with the command that produced it), atomically."""
from __future__ import annotations

import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from nupes_edge.fileio import atomic_write_bytes  # noqa: E402

README = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")


def replace(name: str, content: str, readme: str = README) -> None:
    """Put ``content`` between the README's begin and end markers of block ``name``."""
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    text = open(readme, encoding="utf-8").read()
    if begin not in text or end not in text:
        raise SystemExit(f"{readme} has no {begin} … {end} block")
    block = f"{begin}\n{content}{end}"
    text = re.sub(re.escape(begin) + ".*?" + re.escape(end), lambda _: block, text, flags=re.S)
    atomic_write_bytes(readme, text.encode("utf-8"))
