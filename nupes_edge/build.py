"""Compile a generated model: the host runner (system gcc) now, boards through the same path."""
from __future__ import annotations

import functools
import hashlib
import os
import shutil
import subprocess
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from . import codegen
from .errors import NupesError
from .qmodel import QuantModel

OBJ_CACHE_KEEP = 400  # compiled runtime objects kept between host builds: ~14 per runtime version and flag set
WARNINGS = ["-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic"]


@dataclass
class HostBuild:
    runner: str
    generated: codegen.Generated


def _object_cache_dir() -> str | None:
    """Where compiled runtime objects are kept between builds ($NUPES_EDGE_OBJ_CACHE, else
    $XDG_CACHE_HOME/nupes-edge/obj, else ~/.cache/nupes-edge/obj); None when it cannot be made."""
    d = os.environ.get("NUPES_EDGE_OBJ_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "nupes-edge", "obj")
    try:
        os.makedirs(d, exist_ok=True)
        return d if os.access(d, os.W_OK) else None
    except OSError:
        return None


@functools.cache
def _compiler_id(cc: str) -> str:
    """The compiler's resolved path and version line: a different compiler never reuses an object."""
    path = shutil.which(cc) or cc
    r = subprocess.run([path, "--version"], capture_output=True, text=True)
    return path + "\n" + (r.stdout.splitlines() or [""])[0]


def _run_checked(cmd: list[str]) -> None:
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"compilation failed ({' '.join(cmd)}):\n{r.stderr}")  # a bug in our C, not the user's


def _runtime_objects(cc: str, flags: list[str], runtime_dir: str, cache: str) -> list[str]:
    """The runtime's objects, compiled once per (source, headers, flags, compiler) and reused: the
    runtime is the same for every model, and compiling it dominates a host build (4 s of CPU under
    the sanitizers). Runtime sources include only runtime headers, so the key covers all they read.
    Objects are written under a temporary name and renamed: concurrent builds never see half a file."""
    names = sorted(os.listdir(runtime_dir))
    headers = hashlib.sha256()
    for f in names:
        if f.endswith(".h"):
            with open(os.path.join(runtime_dir, f), "rb") as fh:
                headers.update(f.encode() + b"\0" + fh.read() + b"\0")
    base = hashlib.sha256("\0".join([_compiler_id(cc), *flags]).encode() + headers.digest())
    objects, missing = [], []
    for f in (n for n in names if n.endswith(".c")):
        src = os.path.join(runtime_dir, f)
        with open(src, "rb") as fh:
            key = base.copy()
            key.update(fh.read())
        obj = os.path.join(cache, f"{f[:-2]}-{key.hexdigest()[:24]}.o")
        objects.append(obj)
        try:
            os.utime(obj)  # its last use, for pruning
        except FileNotFoundError:
            missing.append((src, obj))

    def compile_one(src_obj: tuple[str, str]) -> str | None:
        src, obj = src_obj
        tmp = f"{obj}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
        cmd = [cc, *flags, "-I", runtime_dir, "-c", src, "-o", tmp]
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            if os.path.exists(tmp):
                os.unlink(tmp)
            return f"compilation failed ({' '.join(cmd)}):\n{r.stderr}"
        os.replace(tmp, obj)
        return None

    if missing:
        with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
            errors = [e for e in pool.map(compile_one, missing) if e]
        if errors:
            raise RuntimeError(errors[0])  # a bug in our C, not the user's
        _prune(cache)
    return objects


def _prune(cache: str, keep: int = OBJ_CACHE_KEEP) -> None:
    """Keep the ``keep`` most recently used objects (a few runtime versions x flag sets)."""
    try:
        entries = [e for e in os.scandir(cache) if e.name.endswith(".o")]
        for e in sorted(entries, key=lambda e: e.stat().st_mtime, reverse=True)[keep:]:
            os.unlink(e.path)
    except OSError:
        pass  # another build pruned the same file first, or the folder went away: nothing to keep


def _compile(cc: str, flags: list[str], src_dir: str, out: str) -> None:
    if shutil.which(cc) is None:
        raise NupesError(f"C compiler '{cc}' not found; install it (Debian/Ubuntu: apt-get install gcc)")
    runtime_dir = os.path.join(src_dir, "runtime")
    sources = sorted(os.path.join(src_dir, f) for f in os.listdir(src_dir) if f.endswith(".c"))
    cache = _object_cache_dir()
    if cache is not None:
        sources += _runtime_objects(cc, flags, runtime_dir, cache)
    else:
        sources += sorted(os.path.join(runtime_dir, f) for f in os.listdir(runtime_dir) if f.endswith(".c"))
    _run_checked([cc, *flags, "-I", src_dir, "-I", runtime_dir, *sources, "-o", out])


def build_host(qm: QuantModel, out_dir: str, *, sanitize: bool = False, dsp: bool = False, opt: str = "-O2",
               cc: str = "gcc", inplace: bool = False, max_bands: int | None = None) -> HostBuild:
    """Generate the model library plus a stdin/stdout runner into ``out_dir`` and compile it.

    ``dsp`` compiles the Cortex-M DSP path with portable stand-ins for the ARM intrinsics.
    ``sanitize`` adds AddressSanitizer and UndefinedBehaviorSanitizer (any report aborts).
    """
    src = os.path.join(out_dir, "src")
    gen = codegen.generate(qm, src, runner=True, inplace=inplace,
                           max_bands=codegen.DEFAULT_BANDS if max_bands is None else max_bands)
    flags = WARNINGS + [opt, "-DNUPES_DSP_EMULATE" if dsp else "-DNUPES_NO_DSP"]
    if sanitize:
        flags += ["-g", "-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-fno-omit-frame-pointer"]
    runner = os.path.join(out_dir, "nupes_host_runner")
    _compile(cc, flags, src, runner)
    return HostBuild(runner, gen)


def run_host(runner: str, inputs: np.ndarray, timeout: float = 120.0) -> np.ndarray:
    """Feed (N, input_bytes) int8 rows to the runner; returns (N, output_bytes) int8."""
    data = np.ascontiguousarray(inputs, np.int8).tobytes()
    r = subprocess.run([runner], input=data, capture_output=True, timeout=timeout)
    if r.returncode != 0:
        raise RuntimeError(f"{runner} exited with {r.returncode}: {r.stderr.decode(errors='replace')[-2000:]}")
    out = np.frombuffer(r.stdout, np.int8)
    return out.reshape(len(inputs), -1) if len(inputs) else out.reshape(0, 0)
