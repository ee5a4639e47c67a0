"""nupes-edge: NUPES power-exponent quantization for microcontrollers."""

__version__ = "0.1.0"
