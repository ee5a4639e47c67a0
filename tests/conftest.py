import atexit
import os
import shutil
import tempfile

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")
# host builds reuse compiled runtime objects (nupes_edge/build.py); the suite keeps its own cache
# instead of filling the user's ~/.cache, and removes it at exit
_OBJ_CACHE = tempfile.mkdtemp(prefix="nupes-edge-obj-")
os.environ.setdefault("NUPES_EDGE_OBJ_CACHE", _OBJ_CACHE)
atexit.register(shutil.rmtree, _OBJ_CACHE, True)


@pytest.fixture(autouse=True)
def _own_model_cache(tmp_path_factory, monkeypatch):
    """Each test gets an empty shared model cache (nupes_edge/project.py): a project test quantizes
    for itself, whatever ran before it, and the user's ~/.cache is left alone."""
    monkeypatch.setenv("NUPES_EDGE_MODEL_CACHE", str(tmp_path_factory.mktemp("models")))

import numpy as np  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def digits_graph():
    from nupes_edge import examples
    from nupes_edge.importers import import_module

    net = examples.model("digits", progress=False)
    return import_module(net, examples.models.example_input("digits"), "digits")


@pytest.fixture(scope="session")
def digits_calib():
    from nupes_edge import examples

    return examples.load("digits", "calib")[0]


@pytest.fixture(scope="session")
def digits_test():
    from nupes_edge import examples

    return examples.load("digits", "test")


@pytest.fixture(scope="session")
def fast_recon():
    from nupes_edge.quant.reconstruct import ReconConfig

    return ReconConfig(iters=60, batch=32)


def rng(seed=0):
    return np.random.default_rng(seed)
