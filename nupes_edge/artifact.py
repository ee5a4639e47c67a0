"""model.nq: one versioned file holding a QuantModel (IR, codes, exponents, scales, LUTs, calibration).

A zip archive (stored, not compressed) of ``manifest.json`` plus one ``.npy`` per array. The
manifest records the SHA-256 of every array; the model hash is the SHA-256 of the manifest, so
any change to the model changes the hash. Written atomically; on read a truncated, corrupt or
wrong-version file is a NupesError naming the file and the problem.
"""
from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import zipfile

import numpy as np

from .errors import NupesError
from .fileio import atomic_write_bytes
from .intparams import IntAdd, IntClamp, IntLayer
from .ir import Graph, Node, infer_shapes
from .qmodel import QuantModel
from .quant.types import ActQuant, LayerWeights

FORMAT = "nupes-edge-model"
VERSION = 1
_PARAM_TYPES = {"IntLayer": IntLayer, "IntAdd": IntAdd, "IntClamp": IntClamp}


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
        "meta": {k: v for k, v in qm.meta.items() if k != "hash"},  # the hash is derived, not stored
        "graph": {"input_name": g.input_name, "input_shape": list(g.input_shape), "output_name": g.output_name,
                  "output_softmax": g.output_softmax, "nodes": nodes},
        "act": {k: {"scale": v.scale, "zero_point": v.zero_point} for k, v in qm.act.items()},
        "weights": {k: _to_json(v, w, f"weights/{k}") for k, v in qm.weights.items()},
        "params": {k: {"type": type(v).__name__, **_to_json(v, w, f"params/{k}")} for k, v in qm.params.items()},
    }
    manifest["arrays"] = w.digests
    return json.dumps(manifest, sort_keys=True, indent=1).encode(), w.arrays


def model_hash(manifest_bytes: bytes) -> str:
    return hashlib.sha256(manifest_bytes).hexdigest()


def dumps(qm: QuantModel) -> bytes:
    manifest, arrays = _encode(qm)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        z.writestr("manifest.json", manifest)
        for key, data in sorted(arrays.items()):
            z.writestr(f"arrays/{key}.npy", data)
    return buf.getvalue()


def save(qm: QuantModel, path: str) -> str:
    """Write ``qm`` to ``path`` atomically; returns the model hash."""
    data = dumps(qm)
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
        return loads(data, path)
    except NupesError:
        raise
    except (zipfile.BadZipFile, KeyError, ValueError, TypeError, json.JSONDecodeError, EOFError, OSError) as e:
        raise NupesError(f"{path}: corrupt or truncated model file ({type(e).__name__}: {e})") from None


def loads(data: bytes, path: str = "<bytes>") -> QuantModel:
    if not data.startswith(b"PK"):
        raise NupesError(f"{path}: not a nupes-edge model file (.nq)")
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        manifest_bytes = z.read("manifest.json")
        m = json.loads(manifest_bytes)
        if not isinstance(m, dict) or m.get("format") != FORMAT:
            raise NupesError(f"{path}: not a nupes-edge model file (format {m.get('format') if isinstance(m, dict) else '?'!r})")
        if m.get("version") != VERSION:
            raise NupesError(f"{path}: model file version {m.get('version')} is not supported "
                             f"(this nupes-edge reads version {VERSION}); re-run `nupes-edge quantize`")
        digests = m["arrays"]

        def array(key: str) -> np.ndarray:
            raw = z.read(f"arrays/{key}.npy")
            if hashlib.sha256(raw).hexdigest() != digests[key]:
                raise NupesError(f"{path}: array '{key}' does not match its checksum (corrupt file)")
            return np.load(io.BytesIO(raw), allow_pickle=False)

        gj = m["graph"]
        nodes = [Node(name=d["name"], op=d["op"], inputs=list(d["inputs"]), output=d["output"], attrs=d["attrs"],
                      weight=array(d["weight"]) if "weight" in d else None,
                      bias=array(d["bias"]) if "bias" in d else None, source=d.get("source", ""))
                 for d in gj["nodes"]]
        graph = Graph(input_name=gj["input_name"], input_shape=tuple(gj["input_shape"]), output_name=gj["output_name"],
                      nodes=nodes, output_softmax=bool(gj["output_softmax"]))
        infer_shapes(graph)
        act = {k: ActQuant(float(v["scale"]), int(v["zero_point"])) for k, v in m["act"].items()}
        weights = {k: _from_json(LayerWeights, v, array) for k, v in m["weights"].items()}
        params = {k: _from_json(_PARAM_TYPES[v["type"]], v, array) for k, v in m["params"].items()}
    qm = QuantModel(graph=graph, act=act, weights=weights, params=params, method=m["method"], meta=m["meta"])
    qm.meta["hash"] = model_hash(manifest_bytes)
    return qm
