"""Bundled examples on real data shipped inside packages (no downloads).

``load(name, split)`` returns ``(x, y)`` as float32 N×C×H×W and int64 labels;
``model(name)`` returns the example's reference CNN with the weights shipped in the package
(trained deterministically on the train split by ``models.train``, one thread, seconds: see
scripts/train_examples.py).
"""
from .datasets import NAMES, SPLITS, load
from .models import build, model

__all__ = ["NAMES", "SPLITS", "load", "model", "build"]
