"""Optional dependencies: a missing one raises an ImportError that names the extra to install."""

from __future__ import annotations

import importlib
from types import ModuleType


def require(module: str, extra: str) -> ModuleType:
    """Import ``module`` or say which extra of cluster-retriever brings it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(
            f"This part of cluster-retriever needs {module!r}, which is not installed: pip install 'cluster-retriever[{extra}]'"
        ) from exc
