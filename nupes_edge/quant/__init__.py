"""Quantizers over the IR. The driver that turns a float graph into a QuantModel is
``nupes_edge.quant.driver.quantize_graph``; this package file stays import-light on purpose
(qmodel and intparams import its submodules)."""
from .types import METHODS, ActQuant, LayerWeights

__all__ = ["METHODS", "ActQuant", "LayerWeights"]
