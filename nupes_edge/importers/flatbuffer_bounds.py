"""Bounds of a flatbuffer before its object API unpacks it.

A flatbuffer's tables are reached through offsets, and many offsets may point at one table: a
1 MB .tflite whose 100,000 subgraph entries all name one subgraph of 100,000 tensors unpacks to
10^10 objects. ``measure`` walks the file with the lazy (zero-copy) generated accessors, visiting
each table once, and counts what the object API would build (tables, string bytes, vector
elements), with shared tables counted as often as they are reached. Every vector and string is
also checked to lie inside the file. Nothing is copied: strings are measured, not read.
"""
from __future__ import annotations

import flatbuffers.encode as encode
import flatbuffers.number_types as N
from flatbuffers.table import Table

_SKIP_SUFFIXES = ("Length", "IsNone", "AsNumpy", "BufferHasIdentifier", "Type")


class _Str(int):
    """A string's length, returned instead of its bytes."""


class _MeasuringTable(Table):
    def String(self, off):
        off += encode.Get(N.UOffsetTFlags.packer_type, self.Bytes, off)
        length = encode.Get(N.UOffsetTFlags.packer_type, self.Bytes, off)
        if off + N.UOffsetTFlags.bytewidth + length > len(self.Bytes):
            raise ValueError(f"a string of {length} bytes runs past the end of the file")
        return _Str(length)


class Totals:
    def __init__(self):
        self.tables = 0
        self.string_bytes = 0
        self.elements = 0

    def __iadd__(self, other: "Totals") -> "Totals":
        self.tables += other.tables
        self.string_bytes += other.string_bytes
        self.elements += other.elements
        return self


def _fields(cls) -> list[tuple[str, bool]]:
    """(accessor, is_vector) for each field accessor of a generated lazy class."""
    out = []
    for name, f in vars(cls).items():
        if name.startswith("_") or name == "Init" or name.startswith("GetRootAs") or not callable(f):
            continue
        if name.endswith(_SKIP_SUFFIXES):
            continue
        out.append((name, hasattr(cls, name + "Length")))
    return out


class _Walker:
    def __init__(self, schema, limit_tables: int, limit_string_bytes: int):
        self.schema = schema
        self.limit = limit_tables
        self.limit_strings = limit_string_bytes
        self.memo: dict[tuple[str, int], Totals] = {}
        self.fields: dict[type, list] = {}
        self.visited = 0

    def union_class(self, obj, name: str):
        """The lazy class of union field ``name`` (e.g. BuiltinOptions), or None if unknown."""
        enum = getattr(self.schema, name, None)
        code = getattr(obj, name + "Type")()
        if enum is None or not code:
            return None
        names = {v: k for k, v in vars(enum).items() if not k.startswith("_")}
        return getattr(self.schema, names.get(code, ""), None)

    def table(self, obj) -> Totals:
        key = (type(obj).__name__, obj._tab.Pos)
        if key in self.memo:
            return self.memo[key]
        self.visited += 1
        if self.visited > self.limit:
            raise ValueError(f"more than {self.limit:,} distinct tables")
        obj._tab = _MeasuringTable(obj._tab.Bytes, obj._tab.Pos)
        total = Totals()
        total.tables = 1
        cls = type(obj)
        if cls not in self.fields:
            self.fields[cls] = _fields(cls)
        for name, is_vector in self.fields[cls]:
            if is_vector:
                n = getattr(obj, name + "Length")()
                if n <= 0:
                    continue
                last = getattr(obj, name)(n - 1)  # raises if the vector runs past the end of the file
                if hasattr(last, "_tab"):
                    for j in range(n):
                        total += self.table(getattr(obj, name)(j))
                        self.check(total)
                elif isinstance(last, _Str):
                    total.string_bytes += sum(getattr(obj, name)(j) for j in range(n))
                else:
                    total.elements += n
                continue
            value = getattr(obj, name)()
            if isinstance(value, _Str):
                total.string_bytes += value
            elif hasattr(value, "_tab"):
                total += self.table(value)
            elif isinstance(value, Table):  # a union: resolve its type to walk it
                cls_u = self.union_class(obj, name)
                if cls_u is None:
                    total.tables += 1
                else:
                    sub = cls_u()
                    sub.Init(value.Bytes, value.Pos)
                    total += self.table(sub)
            self.check(total)
        self.memo[key] = total
        return total

    def check(self, total: Totals) -> None:
        if total.tables > self.limit:
            raise ValueError(f"its tables unpack to more than {self.limit:,} objects")
        if total.string_bytes > self.limit_strings:
            raise ValueError(f"its strings unpack to more than {self.limit_strings:,} bytes")


def measure(root, schema, limit_tables: int, limit_string_bytes: int) -> Totals:
    """What unpacking ``root`` (a lazy generated object) would build; ValueError past the limits."""
    return _Walker(schema, limit_tables, limit_string_bytes).table(root)
