"""Values that may reach generated C, made safe: a model file is untrusted input.

Nothing read from a file is spliced into C as given. Identifiers are derived (sanitized and
length-bounded); text goes only into comments and string literals, escaped so that it cannot
end them or start a preprocessor line; every number is checked for type and range and written
by Python's own formatting of an int or a finite float.
"""
from __future__ import annotations

import math
import re

import numpy as np

from ..errors import NupesError
from ..validate import c_int, c_ints  # noqa: F401 - the numeric checks, re-exported for the generator

MAX_IDENT = 48
_SAFE_TEXT = re.compile(r"[^A-Za-z0-9_.,:;=+\-()\[\] ]")


def c_identifier(name: str) -> str:
    """A C identifier derived from ``name``: [a-z0-9_] only, a letter first, at most MAX_IDENT chars."""
    s = re.sub(r"[^0-9a-zA-Z_]", "_", str(name)).lower()[:MAX_IDENT]
    return ("m_" + s) if not s or not s[0].isalpha() else s


def c_comment(text) -> str:
    """Text for inside a /* */ comment: a bounded run of harmless characters (no '*/', no newline,
    no '?' that could form a trigraph, no backslash)."""
    return _SAFE_TEXT.sub("_", str(text))[:80]


def c_string(text) -> str:
    """A C string literal (quotes included) holding ``text``: printable ASCII kept except
    '"', '\\' and '?', everything else as an octal escape of its UTF-8 bytes; at most 80 bytes."""
    out = []
    for b in str(text).encode("utf-8", "replace")[:80]:
        ch = chr(b)
        out.append(ch if 0x20 <= b < 0x7F and ch not in '"\\?' else f"\\{b:03o}")
    return '"' + "".join(out) + '"'


def c_float(value, what: str) -> str:
    """A finite positive float as a C literal (repr round-trips it exactly)."""
    if isinstance(value, bool) or not isinstance(value, (float, int, np.floating, np.integer)):
        raise NupesError(f"{what}: expected a number, got {type(value).__name__}")
    v = float(value)
    if not (math.isfinite(v) and v > 0):
        raise NupesError(f"{what}: {v} is not a finite positive number")
    return repr(v)


def c_float32(value, what: str) -> str:
    """A finite float (any sign) as a C float literal naming exactly its float32 value: numpy's
    shortest round-trip digits plus 'f', so the C compiler reads back the same float32."""
    if isinstance(value, bool) or not isinstance(value, (float, int, np.floating, np.integer)):
        raise NupesError(f"{what}: expected a number, got {type(value).__name__}")
    v = np.float32(value)
    if not np.isfinite(v):
        raise NupesError(f"{what}: {float(value)} is not a finite float32")
    text = str(v)
    if not re.fullmatch(r"-?[0-9]+(\.[0-9]*)?(e[-+][0-9]+)?", text):  # pragma: no cover - numpy's format
        raise NupesError(f"{what}: unexpected float text {text!r}")
    return text + ("f" if "." in text or "e" in text else ".0f")
