"""Compile a generated model: the host runner (system gcc) now, boards through the same path."""
from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass

import numpy as np

from . import codegen
from .errors import NupesError
from .qmodel import QuantModel

WARNINGS = ["-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic"]


@dataclass
class HostBuild:
    runner: str
    generated: codegen.Generated


def _compile(cc: str, flags: list[str], src_dir: str, out: str) -> None:
    if shutil.which(cc) is None:
        raise NupesError(f"C compiler '{cc}' not found; install it (Debian/Ubuntu: apt-get install gcc)")
    sources = [os.path.join(src_dir, f) for f in os.listdir(src_dir) if f.endswith(".c")]
    sources += [os.path.join(src_dir, "runtime", f) for f in os.listdir(os.path.join(src_dir, "runtime")) if f.endswith(".c")]
    cmd = [cc, *flags, "-I", src_dir, "-I", os.path.join(src_dir, "runtime"), *sorted(sources), "-o", out]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"compilation failed ({' '.join(cmd)}):\n{r.stderr}")  # a bug in our C, not the user's


def build_host(qm: QuantModel, out_dir: str, *, sanitize: bool = False, dsp: bool = False, opt: str = "-O2",
               cc: str = "gcc") -> HostBuild:
    """Generate the model library plus a stdin/stdout runner into ``out_dir`` and compile it.

    ``dsp`` compiles the Cortex-M DSP path with portable stand-ins for the ARM intrinsics.
    ``sanitize`` adds AddressSanitizer and UndefinedBehaviorSanitizer (any report aborts).
    """
    src = os.path.join(out_dir, "src")
    gen = codegen.generate(qm, src, runner=True)
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
