"""The folder for files that belong to no store: unpacked model weights, server indexes' lists files."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """``$CLUSTER_RETRIEVER_CACHE``, else ``~/.cache/cluster_retriever``."""
    return Path(os.environ.get("CLUSTER_RETRIEVER_CACHE") or Path.home() / ".cache" / "cluster_retriever")
