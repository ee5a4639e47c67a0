"""Bundled examples on real data shipped inside packages (no downloads).

``load(name, split)`` returns ``(x, y)`` as float32 N×C×H×W and int64 labels;
``model(name)`` returns the example's reference CNN with the weights shipped in the package
(trained deterministically on the train split by ``models.train``, one thread, seconds: see
scripts/train_examples.py).
"""
from .datasets import NAMES, SPLITS, load


def __getattr__(name: str):
    """The models (and torch behind them) load on first use: a command that only needs the data
    set names (a no-op build) does not import torch."""
    if name in ("build", "model", "models"):
        import importlib

        models = importlib.import_module(f"{__name__}.models")
        return models if name == "models" else getattr(models, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

__all__ = ["NAMES", "SPLITS", "load", "model", "build"]
