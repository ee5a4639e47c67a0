"""The hand-written C99 kernels, shipped as package data (nupes_edge.runtime_c)."""
import os

DIR = os.path.dirname(os.path.abspath(__file__))


def sources() -> list[str]:
    return sorted(os.path.join(DIR, f) for f in os.listdir(DIR) if f.endswith(".c"))


def headers() -> list[str]:
    return sorted(os.path.join(DIR, f) for f in os.listdir(DIR) if f.endswith(".h"))
