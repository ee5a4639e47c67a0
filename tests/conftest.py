import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
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
