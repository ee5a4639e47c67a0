"""model.nq: one versioned file holding a QuantModel (IR, codes, exponents, scales, LUTs, calibration).

A zip archive (stored, not compressed) of ``manifest.json``, ``seal.sha256`` and one ``.npy`` per
array. The manifest records the SHA-256 of every array; the model hash is the SHA-256 of the
manifest, and the seal stores it, so a manifest changed after writing (by hand or by damage) is
refused unless deliberately re-sealed (``reseal``). Written atomically; on read a truncated,
corrupt, unsealed or wrong-version file is a NupesError naming the file and the problem.
"""
from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import math
import os
import re
import zipfile
import zlib

import numpy as np

from .errors import NupesError
from .fileio import atomic_write_bytes
from .intparams import IntAdd, IntClamp, IntLayer, IntLstm, IntMean, IntMul, IntSoftmax, IntSvdf, IntTable
from .ir import Graph, Node, infer_shapes
from .qmodel import QuantModel
from .quant.types import ActQuant, LayerWeights
from . import validate
from .npyfile import read_npy

FORMAT = "nupes-edge-model"
# Names in a model file become C comments, strings and (derived) identifiers: only this shape,
# which every importer produces (torch.fx names, t<i> / op_<i> for .tflite), is accepted.
NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_.]{0,127}")
VERSION = 2  # 2: the manifest is sealed (seal.sha256)
SEAL = "seal.sha256"
_PARAM_TYPES = {"IntLayer": IntLayer, "IntAdd": IntAdd, "IntClamp": IntClamp, "IntSoftmax": IntSoftmax,
                "IntTable": IntTable, "IntMean": IntMean, "IntMul": IntMul, "IntLstm": IntLstm,
                "IntSvdf": IntSvdf}
# Limits checked before anything is read or allocated: a small file must not become a memory bomb.
MAX_ENTRIES = 4096
MAX_MANIFEST_BYTES = 16 << 20
MAX_ARRAY_BYTES = 256 << 20
MAX_TOTAL_BYTES = 512 << 20


def _npy(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(a), allow_pickle=False)
    return buf.getvalue()


class _Writer:
    def __init__(self):
        self.arrays: dict[str, bytes] = {}
        self.digests: dict[str, str] = {}

    def put(self, key: str, a: np.ndarray) -> str:
        data = _npy(a)
        self.arrays[key] = data
        self.digests[key] = hashlib.sha256(data).hexdigest()
        return key


def _to_json(obj, w: _Writer, key: str):
    """Dataclass fields → JSON values, arrays replaced by references into the archive."""
    out = {}
    for f in dataclasses.fields(obj):
        v = getattr(obj, f.name)
        if isinstance(v, np.ndarray):
            out[f.name] = {"array": w.put(f"{key}.{f.name}", v)}
        elif isinstance(v, (np.integer, np.floating)):
            out[f.name] = v.item()
        else:
            out[f.name] = v
    return out


# Measurements of the run, not properties of the model: kept in memory, never in the hashed manifest,
# so the same model, data, method, options and seed give the same bytes and the same hash.
_VOLATILE_META = ("hash", "seconds")


def _hashed_meta(meta: dict) -> dict:
    out = {k: v for k, v in meta.items() if k not in _VOLATILE_META}
    if isinstance(out.get("flash_budget"), dict):
        out["flash_budget"] = {k: v for k, v in out["flash_budget"].items() if k != "seconds"}
    return out


def _encode(qm: QuantModel) -> tuple[bytes, dict[str, bytes]]:
    w = _Writer()
    g = qm.graph
    nodes = []
    for n in g.nodes:
        d = {"name": n.name, "op": n.op, "inputs": n.inputs, "output": n.output, "attrs": n.attrs, "source": n.source}
        if n.weight is not None:
            d["weight"] = w.put(f"float/{n.name}.weight", n.weight)
            d["bias"] = w.put(f"float/{n.name}.bias", n.bias)
        nodes.append(d)
    manifest = {
        "format": FORMAT,
        "version": VERSION,
        "method": qm.method,
        "meta": _hashed_meta(qm.meta),
        "graph": {"input_name": g.input_name, "input_shape": list(g.input_shape), "output_name": g.output_name,
                  "output_softmax": g.output_softmax, "input_layout": g.input_layout, "nodes": nodes},
        "act": {k: {"scale": v.scale, "zero_point": v.zero_point} for k, v in qm.act.items()},
        "weights": {k: _to_json(v, w, f"weights/{k}") for k, v in qm.weights.items()},
        "params": {k: {"type": type(v).__name__, **_to_json(v, w, f"params/{k}")} for k, v in qm.params.items()},
    }
    if qm.source is not None:  # the int8 .tflite it came from: the oracle verify runs (oracle.py)
        manifest["source_tflite"] = w.put("source/original.tflite", np.frombuffer(qm.source, np.uint8))
    manifest["arrays"] = w.digests
    return json.dumps(manifest, sort_keys=True, indent=1).encode(), w.arrays


def model_hash(manifest_bytes: bytes) -> str:
    return hashlib.sha256(manifest_bytes).hexdigest()


def _entry(name: str) -> zipfile.ZipInfo:
    """A zip entry with a fixed date: the file's bytes depend on its contents only."""
    return zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))


def dumps(qm: QuantModel) -> bytes:
    manifest, arrays = _encode(qm)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        z.writestr(_entry("manifest.json"), manifest)
        z.writestr(_entry(SEAL), model_hash(manifest))
        for key, data in sorted(arrays.items()):
            z.writestr(_entry(f"arrays/{key}.npy"), data)
    return buf.getvalue()


def reseal(data: bytes) -> bytes:
    """The model file ``data`` with its array checksums and manifest seal recomputed from its contents.

    For deliberate edits (and the tests that make them): whoever calls this vouches for the
    manifest, which is still fully validated on load."""
    src = zipfile.ZipFile(io.BytesIO(data))
    m = json.loads(src.read("manifest.json"))
    names = [n for n in src.namelist() if n != SEAL]
    for n in names:
        if n.startswith("arrays/") and n.endswith(".npy"):
            m.setdefault("arrays", {})[n[len("arrays/"):-len(".npy")]] = hashlib.sha256(src.read(n)).hexdigest()
    manifest = json.dumps(m, sort_keys=True, indent=1).encode()
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as z:
        z.writestr("manifest.json", manifest)
        z.writestr(SEAL, model_hash(manifest))
        for n in names:
            if n != "manifest.json":
                z.writestr(n, src.read(n))
    return out.getvalue()


def save(qm: QuantModel, path: str) -> str:
    """Write ``qm`` to ``path`` atomically; returns the model hash. A model that every later command
    would refuse (past the load limits) is refused here, before anything is written."""
    data = dumps(qm)
    if len(data) > MAX_TOTAL_BYTES:
        raise NupesError(f"{path}: the model would be {len(data):,} bytes, more than model files may hold "
                         f"({MAX_TOTAL_BYTES:,}); a model this large does not fit a microcontroller either")
    try:  # what every later command checks, checked before writing (e.g. an infinite activation scale)
        loads(data, path)
    except NupesError as e:
        raise NupesError(f"the quantized model cannot be written, later commands would refuse it: {e}") from None
    atomic_write_bytes(path, data)
    return hash_of(qm)


def hash_of(qm: QuantModel) -> str:
    return model_hash(_encode(qm)[0])


def _from_json(cls, d: dict, arrays):
    kw = {}
    for f in dataclasses.fields(cls):
        if f.name not in d:
            raise KeyError(f"{cls.__name__}.{f.name}")
        v = d[f.name]
        kw[f.name] = arrays(v["array"]) if isinstance(v, dict) and "array" in v else v
    return cls(**kw)


def load(path: str) -> QuantModel:
    """Read a model.nq; raises NupesError if the file is missing, corrupt, truncated or of another version."""
    if not os.path.isfile(path):
        raise NupesError(f"{path}: no such file")
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise NupesError(f"{path}: cannot read ({e.strerror or e})") from None
    return loads(data, path)


_MALFORMED = (zipfile.BadZipFile, KeyError, ValueError, TypeError, json.JSONDecodeError, EOFError, OSError,
              IndexError, AttributeError, OverflowError, RecursionError, NotImplementedError,
              np.exceptions.AxisError, zlib.error, RuntimeError)  # zipfile: a damaged deflate stream, an "encrypted" flag


def _check_name(value, what: str, path: str) -> None:
    if not (isinstance(value, str) and NAME_RE.fullmatch(value)):
        raise NupesError(f"{path}: {what} {str(value)[:60]!r} is not a valid name "
                         f"(letters, digits, '_' and '.', at most 128, a letter or '_' first)")


def _check_meta(meta: dict, path: str) -> None:
    """The meta entries commands read: of the types they expect (an edited file is untrusted)."""
    cal = meta.get("calibration", {})
    if not isinstance(cal, dict) or not isinstance(cal.get("n", 0), int) or isinstance(cal.get("n", 0), bool) \
            or not isinstance(cal.get("data", ""), (str, type(None))):
        raise NupesError(f"{path}: meta.calibration must be a table with an integer 'n' and a 'data' name")
    for key in ("kept_from_file", "flash_budget"):
        if not isinstance(meta.get(key, {}), (dict, type(None))):
            raise NupesError(f"{path}: meta.{key} must be a table")
    if not isinstance(meta.get("seconds", 0.0), (int, float)) or isinstance(meta.get("seconds", 0.0), bool):
        raise NupesError(f"{path}: meta.seconds must be a number")
    if "state" in meta and meta["state"] != "carry":  # only "carry" is ever written (nupes_edge/state.py)
        raise NupesError(f"{path}: meta.state must be \"carry\" when present, not {str(meta['state'])[:40]!r}")


def _check_strings(m: dict, path: str) -> None:
    """Every name and string in the manifest, before anything uses them."""
    from .quant import METHODS

    if m.get("method") not in METHODS:
        raise NupesError(f"{path}: unknown method {str(m.get('method'))[:40]!r} (known: {', '.join(METHODS)})")
    meta = m.get("meta")
    if not isinstance(meta, dict) or not isinstance(meta.get("name", ""), str) or len(meta.get("name", "")) > 128:
        raise NupesError(f"{path}: meta.name must be a string of at most 128 characters")
    _check_meta(meta, path)
    gj = m.get("graph")
    if not isinstance(gj, dict) or not isinstance(gj.get("nodes"), list):
        raise NupesError(f"{path}: the manifest has no graph")
    if gj.get("input_layout", "NCHW") not in ("NCHW", "NHWC"):
        raise NupesError(f"{path}: graph.input_layout must be NCHW or NHWC")
    _check_name(gj.get("input_name"), "graph input", path)
    _check_name(gj.get("output_name"), "graph output", path)
    for d in gj["nodes"]:
        if not isinstance(d, dict) or not isinstance(d.get("inputs"), list):
            raise NupesError(f"{path}: a graph node is malformed")
        _check_name(d.get("name"), "node name", path)
        if not isinstance(d.get("attrs", {}), dict) or not isinstance(d.get("op"), str):
            raise NupesError(f"{path}: node '{d['name']}' has a malformed op or attributes")
        _check_name(d.get("output"), f"output of node '{d['name']}'", path)
        for t in d["inputs"]:
            _check_name(t, f"input of node '{d['name']}'", path)
    for section in ("act", "weights", "params"):
        if not isinstance(m.get(section), dict):
            raise NupesError(f"{path}: the manifest has no '{section}' table")
        for k in m[section]:
            _check_name(k, f"{section} entry", path)
    for k, v in m["act"].items():
        scale, zp = (v.get("scale"), v.get("zero_point")) if isinstance(v, dict) else (None, None)
        if not (isinstance(scale, (int, float)) and not isinstance(scale, bool) and math.isfinite(scale) and scale > 0):
            raise NupesError(f"{path}: tensor '{k}': activation scale {str(scale)[:40]!r} is not a finite positive number")
        if not (isinstance(zp, int) and not isinstance(zp, bool) and -128 <= zp <= 127):
            raise NupesError(f"{path}: tensor '{k}': zero point {str(zp)[:40]!r} is not an int8")


def loads(data: bytes, path: str = "<bytes>") -> QuantModel:
    """A model.nq's bytes → QuantModel; anything malformed is a NupesError naming ``path``."""
    try:
        return _loads(data, path)
    except NupesError:
        raise
    except _MALFORMED as e:
        raise NupesError(f"{path}: corrupt or truncated model file ({type(e).__name__}: {str(e)[:200]})") from None


def _loads(data: bytes, path: str) -> QuantModel:
    if not data.startswith(b"PK"):
        raise NupesError(f"{path}: not a nupes-edge model file (.nq)")
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        _check_sizes(z, path)
        manifest_bytes = z.read("manifest.json")
        try:
            m = json.loads(manifest_bytes)
        except RecursionError:
            raise NupesError(f"{path}: the manifest is nested too deeply") from None
        if not isinstance(m, dict) or m.get("format") != FORMAT:
            raise NupesError(f"{path}: not a nupes-edge model file (format {m.get('format') if isinstance(m, dict) else '?'!r})")
        if m.get("version") != VERSION:
            raise NupesError(f"{path}: model file version {m.get('version')} is not supported "
                             f"(this nupes-edge reads version {VERSION}); re-run `nupes-edge quantize`")
        _check_seal(z, manifest_bytes, path)
        digests = m["arrays"]
        loaded = [0]  # bytes materialised, every reference counted: one array named 60 times costs 60 times

        def array(key: str) -> np.ndarray:
            if not isinstance(key, str) or key not in digests:
                raise NupesError(f"{path}: array reference {str(key)[:60]!r} is not in the manifest's checksums")
            size = z.getinfo(f"arrays/{key}.npy").file_size
            loaded[0] += size
            if loaded[0] > MAX_TOTAL_BYTES:
                raise NupesError(f"{path}: its array references add up to more than {MAX_TOTAL_BYTES} bytes "
                                 "(an array named by many layers counts each time)")
            raw = z.read(f"arrays/{key}.npy")
            if hashlib.sha256(raw).hexdigest() != digests[key]:
                raise NupesError(f"{path}: array '{key}' does not match its checksum (corrupt file)")
            return read_npy(raw, f"{path}: array '{key}'")

        _check_strings(m, path)
        gj = m["graph"]
        nodes = [Node(name=d["name"], op=d["op"], inputs=list(d["inputs"]), output=d["output"], attrs=d["attrs"],
                      weight=array(d["weight"]) if "weight" in d else None,
                      bias=array(d["bias"]) if "bias" in d else None, source=d.get("source", ""))
                 for d in gj["nodes"]]
        graph = Graph(input_name=gj["input_name"], input_shape=tuple(gj["input_shape"]), output_name=gj["output_name"],
                      nodes=nodes, output_softmax=bool(gj["output_softmax"]),
                      input_layout=gj.get("input_layout", "NCHW"))
        infer_shapes(graph)
        if m["meta"].get("state") == "carry":
            from .state import check as check_state

            try:
                check_state(graph, "carry")
            except NupesError as e:
                raise NupesError(f"{path}: meta.state: {e}") from None
        act = {k: ActQuant(float(v["scale"]), int(v["zero_point"])) for k, v in m["act"].items()}
        weights = {k: _from_json(LayerWeights, v, array) for k, v in m["weights"].items()}
        params = {k: _from_json(_PARAM_TYPES[v["type"]], v, array) for k, v in m["params"].items()}
        source = None
        if m.get("source_tflite") is not None:
            src = array(m["source_tflite"])
            if src.dtype != np.uint8 or src.ndim != 1:
                raise NupesError(f"{path}: the source .tflite must be stored as bytes")
            source = src.tobytes()
    qm = QuantModel(graph=graph, act=act, weights=weights, params=params, method=m["method"], meta=m["meta"],
                    source=source)
    missing = [t for t in graph.shapes if t not in act]
    if missing:
        raise NupesError(f"{path}: tensor '{missing[0]}' has no activation quantization")
    try:
        validate.check_model(qm)
    except NupesError as e:
        raise NupesError(f"{path}: {e}") from None
    qm.meta["hash"] = model_hash(manifest_bytes)
    return qm


def _check_seal(z: zipfile.ZipFile, manifest_bytes: bytes, path: str) -> None:
    """The manifest must be the one the file was written with."""
    try:
        seal = z.read(SEAL)
    except KeyError:
        raise NupesError(f"{path}: the model file has no seal (damaged, or edited by hand); "
                         "re-run `nupes-edge quantize`") from None
    if seal.strip() != model_hash(manifest_bytes).encode():
        raise NupesError(f"{path}: the manifest was changed after the file was written (its SHA-256 does not "
                         "match the seal); re-run `nupes-edge quantize`, or re-seal a deliberate edit with "
                         "nupes_edge.artifact.reseal()")


def _check_sizes(z: zipfile.ZipFile, path: str) -> None:
    infos = z.infolist()
    if len(infos) > MAX_ENTRIES:
        raise NupesError(f"{path}: {len(infos)} entries (at most {MAX_ENTRIES})")
    total = 0
    for info in infos:
        limit = MAX_MANIFEST_BYTES if info.filename == "manifest.json" else MAX_ARRAY_BYTES
        if info.file_size > limit:
            raise NupesError(f"{path}: entry '{info.filename[:60]}' unpacks to {info.file_size} bytes (at most {limit})")
        total += info.file_size
    if total > MAX_TOTAL_BYTES:
        raise NupesError(f"{path}: unpacks to {total} bytes (at most {MAX_TOTAL_BYTES})")

