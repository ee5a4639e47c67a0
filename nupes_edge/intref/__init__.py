"""The bit-exact integer reference: the oracle every C build must match."""
from .reference import run_int, quantize_input, dequantize_output

__all__ = ["run_int", "quantize_input", "dequantize_output"]
