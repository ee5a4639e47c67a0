"""Load a torch.export .pt2 archive without unpickling anything from it.

``torch.export.load`` unpickles with ``weights_only=False`` wherever the archive's config marks an
entry ``use_pickle`` (and for custom or opaque objects, legacy weight files and sample inputs
that fail the safe loader), and an unpickle can run any code. A .pt2 is untrusted input
(docs/reliability.md), so:

1. the archive is inspected first (a zip of JSON configs and raw tensor bytes): any entry that
   needs pickle is refused, naming it;
2. the load itself then runs with every unpickler torch could reach replaced: ``torch.load``
   forced to ``weights_only=True`` (torch's restricted unpickler, tensors only), ``pickle.loads``
   and torch's object unpickler refusing outright. Should a new torch version find another way in,
   the load fails instead of running code.
"""
from __future__ import annotations

import contextlib
import json
import pickle
import zipfile

import torch

from ..errors import NupesError

_MAX_CONFIG_BYTES = 16 * 1024 * 1024
_SAFE_CONSTANT_PREFIX = "tensor_"


class _UnpickleRefused(Exception):
    pass


def _refuse_unpickle(*args, **kwargs):
    raise _UnpickleRefused("an entry of the archive needs pickle")


def inspect_archive(path: str) -> None:
    """Raise NupesError if the .pt2 at ``path`` holds any entry that only pickle can load."""
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as e:
        raise NupesError(f"{path}: not a readable torch.export (.pt2) file: {e}") from None
    with zf:
        for info in zf.infolist():
            name = info.filename
            base = name.rsplit("/", 1)[-1]
            if "/aotinductor/" in f"/{name}":
                raise NupesError(f"{path}: holds an AOTInductor package ({name}); nupes-edge reads only "
                                 "torch.export.save archives of plain tensors")
            if base.endswith((".pt", ".pkl", ".pickle")) and "/sample_inputs/" not in f"/{name}":
                raise NupesError(f"{path}: holds a pickled entry ({name}), which could run code when loaded; "
                                 "nupes-edge refuses pickles: save the model again with torch.export.save")
            if not base.endswith("_config.json"):
                continue
            if info.file_size > _MAX_CONFIG_BYTES:
                raise NupesError(f"{path}: {name} is {info.file_size} bytes; refused")
            try:
                config = json.loads(zf.read(name)).get("config", {})
            except (ValueError, AttributeError) as e:
                raise NupesError(f"{path}: {name} is not valid JSON ({e})") from None
            if not isinstance(config, dict):
                raise NupesError(f"{path}: {name} is malformed (its 'config' is not a mapping)")
            for fqn, meta in config.items():
                if not isinstance(meta, dict):
                    raise NupesError(f"{path}: {name}: entry {fqn!r} is malformed")
                pathname = str(meta.get("path_name", ""))
                if meta.get("use_pickle") or ("constants" in base and not pathname.startswith(_SAFE_CONSTANT_PREFIX)):
                    raise NupesError(f"{path}: the archive stores {fqn!r} ({name}) as a pickle, which could run "
                                     "code when loaded; nupes-edge refuses pickled entries (a model of plain "
                                     "tensors saved with torch.export.save has none)")


@contextlib.contextmanager
def _no_unpickling():
    real_load = torch.load
    real_loads = pickle.loads
    real_obj = getattr(torch._C, "_pickle_load_obj", None)

    def weights_only_load(f, *args, **kwargs):
        kwargs["weights_only"] = True
        return real_load(f, *args, **kwargs)

    torch.load = weights_only_load
    pickle.loads = _refuse_unpickle
    if real_obj is not None:
        torch._C._pickle_load_obj = _refuse_unpickle
    try:
        yield
    finally:
        torch.load = real_load
        pickle.loads = real_loads
        if real_obj is not None:
            torch._C._pickle_load_obj = real_obj


def load_pt2(path: str):
    """torch.export.load(path), refusing anything that needs pickle (NupesError, no code run)."""
    inspect_archive(path)
    try:
        with _no_unpickling():
            return torch.export.load(path)
    except _UnpickleRefused:
        raise NupesError(f"{path}: an entry of the archive needs pickle, which could run code; refused") from None
    except pickle.UnpicklingError as e:
        raise NupesError(f"{path}: an entry of the archive is not plain tensor data ({str(e).splitlines()[0][:200]}); "
                         "refused") from None
