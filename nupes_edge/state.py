"""A model's state mode: what its stateful operators (the ``lstm`` and ``svdf`` nodes) start from.

"reset" (the default): every inference starts from TFLite Micro's reset state (ResetVariableTensors:
an LSTM's hidden state at its zero point and its cell state 0; an SVDF's int8 state at its zero point,
an int16 one at 0), the way a whole-sequence classifier runs. "carry": the state starts there when the
model starts (power-on, process start) and after an explicit reset, and each inference continues from
the previous one's final state, the way TFLite Micro runs a streaming model (variables persist across
Invoke() until reset). A batch of N inputs given to verify, run, eval or the reference is then a
sequence, in that order. Stored as ``meta["state"] = "carry"`` only (a reset model's meta and hash
are unchanged).
"""
from __future__ import annotations

from .errors import NupesError

MODES = ("reset", "carry")
STATEFUL_OPS = ("lstm", "svdf")


def stateful_nodes(graph) -> list:
    return [n for n in graph.nodes if n.op in STATEFUL_OPS]


def check(graph, state: str) -> None:
    """Refuse an unknown mode, and "carry" for a model with nothing to carry."""
    if state not in MODES:
        raise NupesError(f"state must be one of {', '.join(MODES)}, not {str(state)[:40]!r}")
    if state == "carry" and not stateful_nodes(graph):
        raise NupesError("--state carry: the model has no stateful operator (UNIDIRECTIONAL_SEQUENCE_LSTM or "
                         "SVDF), so there is no state to carry between inferences")


def mode(qm) -> str:
    """The model's state mode ("reset" unless its meta says "carry")."""
    return "carry" if qm.meta.get("state") == "carry" else "reset"


def carries(qm) -> bool:
    return mode(qm) == "carry" and bool(stateful_nodes(qm.graph))
