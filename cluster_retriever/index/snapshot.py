"""What a query reads, as one object, and which generations queries still read.

A write makes a new ``Snapshot`` and swaps it in whole, so a query in flight never mixes two
versions. A generation replaced by a re-clustering is dropped from Chroma only once no query
of this process reads it any more (``Readers``).
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from cluster_retriever.scan.lists import InvertedLists
from cluster_retriever.store.manifest import Manifest

Records = dict[str, tuple[str, dict[str, Any]]]
"""id -> (text, metadata): the records kept in memory by ``cache_records()``."""


@dataclass(frozen=True)
class Snapshot:
    """The manifest, the inverted lists of its generation, and the cached records (or None)."""

    manifest: Manifest
    lists: InvertedLists
    records: Records | None


class Readers:
    """Queries in flight per generation; ``drop(generation)`` runs once a retired generation
    has no reader left (at once when it has none)."""

    def __init__(self, drop: Callable[[int], None]) -> None:
        self._drop = drop
        self._count: Counter[int] = Counter()
        self._retired: set[int] = set()
        self._lock = threading.Lock()

    @contextmanager
    def reading(self, generation: int) -> Iterator[None]:
        with self._lock:
            self._count[generation] += 1
        try:
            yield
        finally:
            with self._lock:
                self._count[generation] -= 1
                drop = self._count[generation] == 0 and generation in self._retired
                if drop:
                    self._retired.discard(generation)
            if drop:
                self._drop(generation)

    def retire(self, generation: int) -> None:
        with self._lock:
            if self._count[generation] > 0:
                self._retired.add(generation)
                return
        self._drop(generation)
