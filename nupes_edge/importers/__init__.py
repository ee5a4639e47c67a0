"""Importers: trained models → graph IR."""
from .torch_import import import_exported, import_module, import_pt2

__all__ = ["import_exported", "import_module", "import_pt2"]
