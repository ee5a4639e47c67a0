"""Project folders: nupes-edge.toml, and quantization cached by content hash.

    [project]
    model = "mnist5k"      # a bundled example or a .pt2 file (relative to the folder)
    data = "mnist5k"       # calibration / evaluation data: bundled name or .npz
    method = "nupes"
    wbits = 4
    seed = 0
    board = "stm32"
    probe = "qemu"
"""
from __future__ import annotations

import hashlib
import json
import os
import tomllib
from dataclasses import asdict, dataclass

from . import __version__, artifact, examples
from .errors import NupesError
from .fileio import atomic_write_bytes
from .quant import METHODS

FILE = "nupes-edge.toml"
STATE_DIR = ".nupes-edge"


@dataclass
class Project:
    root: str
    model: str
    data: str
    method: str = "nupes"
    wbits: int = 4
    seed: int = 0
    board: str = "stm32"
    probe: str = "qemu"
    test: str = ""  # evaluation data for an .npz project (bundled names use their test split)

    def path(self, rel: str) -> str:
        return rel if os.path.isabs(rel) or rel in examples.NAMES else os.path.join(self.root, rel)

    def cache_key(self) -> str:
        """Hash of everything the quantized model depends on."""
        h = hashlib.sha256()
        for spec in (self.model, self.data):
            p = self.path(spec)
            if os.path.isfile(p):
                with open(p, "rb") as f:
                    h.update(hashlib.sha256(f.read()).digest())
            else:
                h.update(spec.encode())
        h.update(json.dumps([self.method, self.wbits, self.seed, __version__, artifact.VERSION]).encode())
        return h.hexdigest()[:24]

    def cached_model_path(self) -> str:
        return os.path.join(self.root, STATE_DIR, "cache", f"{self.cache_key()}.nq")

    def build_dir(self, board: str) -> str:
        return os.path.join(self.root, "build", board)


def init(folder: str, example: str = "mnist5k", method: str = "nupes", wbits: int = 4, board: str = "stm32") -> str:
    from . import boards

    if example not in examples.NAMES:
        raise NupesError(f"unknown example '{example}' (bundled: {', '.join(examples.NAMES)})")
    if method not in METHODS:
        raise NupesError(f"unknown method '{method}' (known: {', '.join(METHODS)})")
    if not (isinstance(wbits, int) and 2 <= wbits <= 8):
        raise NupesError(f"weight bits {wbits!r}: expected 2..8")
    if board != "host":
        boards.get(board)  # an unknown board is refused now, not after quantizing
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, FILE)
    if os.path.exists(path):
        raise NupesError(f"{path} already exists")
    text = (f"# nupes-edge project (see `nupes-edge --help`)\n[project]\nmodel = \"{example}\"\ndata = \"{example}\"\n"
            f"method = \"{method}\"\nwbits = {wbits}\nseed = 0\nboard = \"{board}\"\nprobe = \"qemu\"\n")
    atomic_write_bytes(path, text.encode())
    return path


def load(folder: str = ".") -> Project:
    path = os.path.join(folder, FILE)
    if not os.path.isfile(path):
        raise NupesError(f"no model given and no {FILE} in {os.path.abspath(folder)} (run `nupes-edge init`)")
    try:
        with open(path, "rb") as f:
            d = tomllib.load(f).get("project", {})
    except tomllib.TOMLDecodeError as e:
        raise NupesError(f"{path}: {e}") from None
    for key in ("model", "data"):
        if key not in d:
            raise NupesError(f"{path}: [project] needs '{key}'")
    p = Project(root=os.path.abspath(folder), **{k: d[k] for k in asdict(Project("", "", "")) if k in d and k != "root"})
    if p.method not in METHODS:
        raise NupesError(f"{path}: unknown method '{p.method}' (one of {', '.join(METHODS)})")
    if not isinstance(p.wbits, int) or not 2 <= p.wbits <= 8:
        raise NupesError(f"{path}: wbits must be 2..8, got {p.wbits!r}")
    return p


def test_data(p: Project) -> str:
    """What verify, run and eval use when no --data is given: the 'test' file, else the bundled
    name (its held-out test split), else the calibration .npz, with a note saying so."""
    import sys

    if p.test:
        return p.path(p.test)
    if p.data in examples.NAMES:
        return p.data
    print(f"nupes-edge: note: no 'test' data in {FILE}: measuring on the calibration data {p.path(p.data)} "
          f"(add test = \"your_test.npz\" under [project])", file=sys.stderr)
    return p.path(p.data)


def quantized_model(p: Project, progress: bool = True) -> str:
    """The project's model.nq, quantized once per content hash."""
    from . import api

    out = p.cached_model_path()
    if not os.path.isfile(out):
        api.quantize(p.path(p.model), p.path(p.data), p.method, p.wbits, out, seed=p.seed, progress=progress)
    return out
