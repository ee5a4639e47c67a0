"""Importers: trained models → graph IR."""
from .tflite_import import import_tflite, import_tflite_bytes
from .torch_import import import_exported, import_module, import_pt2

__all__ = ["import_exported", "import_module", "import_pt2", "import_tflite", "import_tflite_bytes"]
