"""nupes-edge: NUPES power-exponent quantization for microcontrollers."""

__version__ = "0.1.0"

# (not `codegen`: that name is the nupes_edge.codegen package; use nupes_edge.api.codegen)
_API = ("quantize", "eval_model", "build_host", "verify_host", "build_board", "run_emulated", "export_tflite")


def __getattr__(name: str):
    """The Python API (nupes_edge.api, documented in docs/api.md), imported on first use so that
    `nupes-edge --version` does not load torch."""
    if name in _API:
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'nupes_edge' has no attribute '{name}'")
