"""Project folders: nupes-edge.toml, and quantization cached by content hash.

    [project]
    model = "mnist5k"      # a bundled example or a .pt2 file (relative to the folder)
    data = "mnist5k"       # calibration / evaluation data: bundled name or .npz
    method = "nupes"
    wbits = 4
    seed = 0
    board = "stm32"
    probe = "qemu"
    test = "test.npz"      # optional: evaluation data for verify / run / eval
    flash_budget = "24K"   # optional: bits per layer chosen to fit (quantize --flash-budget)
    layer_wbits = { conv2d = 8 }   # optional: per-layer bits (quantize --layer-wbits)
    keep_softmax = false   # optional (quantize --keep-softmax)
    recalibrate = false    # optional, an int8 .tflite (quantize --recalibrate)

The file is checked against this schema: an unknown key or table is an error with a "did you
mean", a value of the wrong type or range names the key. The file is found in the current folder
or the nearest parent that has one, as git finds .git.
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
    flash_budget: str = ""  # a size ("24K", "24576"): bits per layer chosen to fit
    layer_wbits: dict | None = None  # layer name -> bits
    keep_softmax: bool | None = None
    recalibrate: bool = False
    levels: str = ""  # "int16" / "int8"; empty: int8 on a Helium board (Cortex-M55), else int16
    state: str = "reset"  # "reset" / "carry": an LSTM's / SVDF's state between inferences (quantize --state)

    def level_bits(self) -> int:
        """The weight levels the project quantizes with (quantize --levels)."""
        if self.levels:
            return 8 if self.levels == "int8" else 16
        from . import boards

        return 8 if self.board != "host" and boards.get(self.board).helium else 16

    def path(self, rel: str) -> str:
        return rel if os.path.isabs(rel) or rel in examples.NAMES or rel == RANDOM else os.path.join(self.root, rel)

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
        h.update(json.dumps([self.method, self.wbits, self.seed, __version__, artifact.VERSION, self.flash_budget,
                             sorted((self.layer_wbits or {}).items()), self.keep_softmax, self.recalibrate]
                            + ([] if self.level_bits() == 16 else ["levels", 8])
                            + ([] if self.state == "reset" else ["state", self.state])).encode())
        return h.hexdigest()[:24]

    def cached_model_path(self) -> str:
        return os.path.join(self.root, STATE_DIR, "cache", f"{self.cache_key()}.nq")

    def build_dir(self, board: str) -> str:
        return os.path.join(self.root, "build", board)


def init(folder: str, example: str | None = None, method: str | None = None, wbits: int | None = None,
         board: str = "stm32", model: str | None = None, data: str | None = None) -> str:
    """Write ``folder``/nupes-edge.toml for a bundled example, or for the user's own ``model`` (a .pt2
    or .tflite, with ``data``: an .npz of calibration inputs; an int8 .tflite needs none, its own
    quantization is kept and verification feeds random inputs)."""
    from . import boards

    if model is None:
        example = example or "mnist5k"
        if example not in examples.NAMES:
            raise NupesError(f"unknown example '{example}' (bundled: {', '.join(examples.NAMES)})")
        if data is not None:
            raise NupesError("--data goes with --model (a bundled example brings its own data)")
        model_spec = data_spec = example
    else:
        if example is not None:
            raise NupesError("give --example or --model, not both")
        if not model.endswith((".pt2", ".tflite")) or not os.path.isfile(model):
            raise NupesError(f"{model}: expected an existing .pt2 or .tflite file")
        if data is None and model.endswith(".pt2"):
            raise NupesError(f"{model}: a PyTorch model needs calibration data: add --data calib.npz (an .npz with "
                             "x as the model takes it)")
        if data is not None and not (data in examples.NAMES or (data.endswith(".npz") and os.path.isfile(data))):
            raise NupesError(f"{data}: expected an existing .npz file or a bundled data set name")
        if data is None:  # an int8 .tflite kept as it is: uniform W8 reproduces the file
            method, wbits = method or "uniform", wbits or 8

        def rel(p: str) -> str:
            return p if p in examples.NAMES else os.path.relpath(os.path.abspath(p), os.path.abspath(folder))

        model_spec, data_spec = rel(model), (rel(data) if data is not None else RANDOM)
    method, wbits = method or "nupes", wbits or 4
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
    text = (f"# nupes-edge project (see `nupes-edge --help`)\n[project]\nmodel = {json.dumps(model_spec)}\n"
            f"data = {json.dumps(data_spec)}\nmethod = \"{method}\"\nwbits = {wbits}\nseed = 0\nboard = \"{board}\"\n"
            f"probe = \"qemu\"\n")
    atomic_write_bytes(path, text.encode())
    return path


# data = "random": no calibration data (an int8 .tflite keeps its own quantization); random inputs to verify
RANDOM = "random"


# [project]'s schema: key -> (type, what it takes). Everything else is an error.
SCHEMA = {
    "model": (str, "a bundled example name, a .pt2 or a .tflite file"),
    "data": (str, "a bundled data set name, an .npz file, or \"random\" (an int8 .tflite: none needed)"),
    "method": (str, f"one of {', '.join(METHODS)}"),
    "wbits": (int, "weight bits, 2..8"),
    "seed": (int, "a seed, 0..2^31-1"),
    "board": (str, "a board name (`nupes-edge boards`)"),
    "probe": (str, "qemu, pyocd, stlink, openocd or auto"),
    "test": (str, "an .npz file of evaluation data"),
    "flash_budget": ((str, int), "a size in bytes such as 24576 or \"24K\""),
    "layer_wbits": (dict, "a table of layer name = bits (2..8)"),
    "keep_softmax": (bool, "true or false"),
    "recalibrate": (bool, "true or false"),
    "levels": (str, "\"int16\" or \"int8\" (default: int8 for a Helium board such as the Cortex-M55, else int16)"),
    "state": (str, "\"reset\" or \"carry\" (an LSTM's / SVDF's state between inferences; default reset)"),
}


def _did_you_mean(key: str, known) -> str:
    import difflib

    close = difflib.get_close_matches(key, list(known), n=1, cutoff=0.5)
    return f"; did you mean '{close[0]}'?" if close else f" (known: {', '.join(known)})"


def find(start: str = ".") -> str | None:
    """The folder of the nearest nupes-edge.toml: ``start`` or a parent (as git finds .git)."""
    folder = os.path.abspath(start)
    while True:
        if os.path.isfile(os.path.join(folder, FILE)):
            return folder
        parent = os.path.dirname(folder)
        if parent == folder:
            return None
        folder = parent


def validate(d: dict, path: str) -> dict:
    """[project] of a parsed nupes-edge.toml, checked against SCHEMA (NupesError naming the key)."""
    extra = [k for k in d if k != "project"]
    if extra:
        raise NupesError(f"{path}: unknown table or key '{extra[0]}' at the top level (everything goes under [project])")
    proj = d.get("project", {})
    if not isinstance(proj, dict):
        raise NupesError(f"{path}: 'project' must be a table ([project])")
    for key, value in proj.items():
        if key not in SCHEMA:
            raise NupesError(f"{path}: unknown key '{key}' in [project]{_did_you_mean(key, SCHEMA)}")
        typ, what = SCHEMA[key]
        if isinstance(value, bool) and typ is not bool or not isinstance(value, typ):
            raise NupesError(f"{path}: [project] {key} = {str(value)[:40]!r}: expected {what}")
    for key in ("model", "data"):
        if key not in proj:
            raise NupesError(f"{path}: [project] needs '{key}'")
    if proj.get("method", "nupes") not in METHODS:
        raise NupesError(f"{path}: unknown method '{proj['method']}'{_did_you_mean(proj['method'], METHODS)}")
    if not 2 <= proj.get("wbits", 4) <= 8:
        raise NupesError(f"{path}: wbits must be 2..8, got {proj['wbits']!r}")
    if not 0 <= proj.get("seed", 0) < 1 << 31:
        raise NupesError(f"{path}: seed must be 0..2^31-1, got {proj['seed']!r}")
    if proj.get("probe", "qemu") not in ("qemu", "pyocd", "stlink", "openocd", "auto"):
        raise NupesError(f"{path}: unknown probe '{proj['probe']}' (qemu, pyocd, stlink, openocd or auto)")
    for layer, bits in (proj.get("layer_wbits") or {}).items():
        if isinstance(bits, bool) or not isinstance(bits, int) or not 2 <= bits <= 8:
            raise NupesError(f"{path}: [project] layer_wbits.{layer} = {bits!r}: expected bits 2..8")
    if proj.get("levels", "int16") not in ("int16", "int8"):
        raise NupesError(f"{path}: [project] levels = {proj['levels']!r}: expected \"int16\" or \"int8\"")
    if proj.get("state", "reset") not in ("reset", "carry"):
        raise NupesError(f"{path}: [project] state = {proj['state']!r}: expected \"reset\" or \"carry\"")
    if "flash_budget" in proj:
        proj["flash_budget"] = str(proj["flash_budget"])
    return proj


def load(folder: str | None = None) -> Project:
    root = find(folder or ".") if folder is None else os.path.abspath(folder)
    path = os.path.join(root or os.path.abspath("."), FILE)
    if root is None or not os.path.isfile(path):
        raise NupesError(f"no model given and no {FILE} in {os.path.abspath(folder or '.')} or its parents "
                         "(run `nupes-edge init`)")
    try:
        with open(path, "rb") as f:
            d = tomllib.load(f)
    except tomllib.TOMLDecodeError as e:
        raise NupesError(f"{path}: {e}") from None
    except UnicodeDecodeError as e:
        raise NupesError(f"{path}: not UTF-8 text (byte {e.start}); TOML files are UTF-8") from None
    proj = validate(d, path)
    return Project(root=root, **{k: proj[k] for k in asdict(Project("", "", "")) if k in proj and k != "root"})


def test_data(p: Project) -> str:
    """What verify, run and eval use when no --data is given: the 'test' file, else the bundled
    name (its held-out test split), else the calibration .npz, with a note saying so."""
    import sys

    if p.test:
        return p.path(p.test)
    if p.data in examples.NAMES or p.data == RANDOM:
        return p.data
    print(f"nupes-edge: note: no 'test' data in {FILE}: measuring on the calibration data {p.path(p.data)} "
          f"(add test = \"your_test.npz\" under [project])", file=sys.stderr)
    return p.path(p.data)


def shared_cache_path(key: str) -> str | None:
    """Where quantized models are shared between projects and `nupes-edge demo` on this machine
    ($NUPES_EDGE_MODEL_CACHE, else $XDG_CACHE_HOME/nupes-edge/models, else ~/.cache/...): a model.nq
    is a pure function of its inputs, so the same key means the same bytes. None if not writable."""
    d = os.environ.get("NUPES_EDGE_MODEL_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "nupes-edge", "models")
    try:
        os.makedirs(d, exist_ok=True)
        return os.path.join(d, f"{key}.nq") if os.access(d, os.W_OK) else None
    except OSError:
        return None


def share(key: str, nq_path: str) -> None:
    """Offer a freshly quantized model to the shared cache (best effort: a full disk only costs time)."""
    shared = shared_cache_path(key)
    if shared and not os.path.isfile(shared):
        try:
            with open(nq_path, "rb") as f:
                atomic_write_bytes(shared, f.read())
        except (OSError, NupesError):
            pass


def remember_example(example: str, method: str, wbits: int, nq_path: str) -> None:
    """`nupes-edge demo` shares what a project of the same example, method and bits would quantize."""
    share(Project("", example, example, method=method, wbits=wbits).cache_key(), nq_path)


def quantized_model(p: Project, progress: bool = True) -> str:
    """The project's model.nq, quantized once per content hash (nothing heavy imported when cached);
    a model the same inputs already gave on this machine (another project, `make demo`) is reused."""
    out = p.cached_model_path()
    if os.path.isfile(out):
        try:
            artifact.load(out)
        except NupesError:  # a damaged cache entry (a killed run, a full disk): made again
            os.unlink(out)
    shared = shared_cache_path(p.cache_key())
    if not os.path.isfile(out) and shared and os.path.isfile(shared):
        try:
            with open(shared, "rb") as f:
                data = f.read()
            artifact.loads(data, shared)
            atomic_write_bytes(out, data)
        except (OSError, NupesError):
            pass  # damaged or unreadable: quantize again
    if not os.path.isfile(out):
        from . import api

        api.quantize(p.path(p.model), None if p.data == RANDOM else p.path(p.data), p.method, p.wbits, out, overrides=dict(p.layer_wbits or {}),
                     seed=p.seed, progress=progress, flash_budget=p.flash_budget or None,
                     recalibrate=p.recalibrate, keep_softmax=p.keep_softmax, levels=p.level_bits(), state=p.state)
        share(p.cache_key(), out)
    return out
