"""Filter masks: which rows of one version of the lists a restriction lets through, cached.

A mask is computed once per restriction and lists version (the lists are immutable, so a
cached mask never goes stale) from the rows' filterable metadata, read on the first
filtered query. Chroma stays the judge: the search checks every hit against the metadata
Chroma holds now, so a mask can only cost a wasted candidate, never a leak.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import numpy as np

from cluster_retriever.filters import MetadataColumns, Restriction, filter_key, restrict

MASK_CACHE = 64  # restrictions remembered per version of the lists


class MaskCache:
    """Masks over rows ``ids`` whose columns come from ``columns`` (called when first needed)."""

    def __init__(self, ids: np.ndarray, columns: Callable[[], MetadataColumns]) -> None:
        self._ids = ids
        self._columns = columns
        self._masks: dict[str, np.ndarray] = {}
        self._lock = threading.Lock()

    def mask(self, restriction: Restriction) -> np.ndarray | None:
        """Rows a query may return, or None when nothing restricts it."""
        if restriction.is_empty:
            return None
        key = filter_key(restriction)
        with self._lock:
            cached = self._masks.get(key)
        if cached is not None:
            return cached
        allowed = restrict(self._columns(), self._ids, restriction)
        with self._lock:
            if len(self._masks) >= MASK_CACHE:
                self._masks.pop(next(iter(self._masks)))
            self._masks[key] = allowed
        return allowed
