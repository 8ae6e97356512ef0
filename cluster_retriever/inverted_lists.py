"""In-memory inverted lists: each cluster's vectors in one contiguous block.

Chroma stays the source of truth; this is the search structure built from it on open.
A routed query scans only the probed clusters' blocks exactly, so its results equal an
exact search restricted to those clusters, with no filtered-HNSW recall loss.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ScanResult:
    ids: list[str]
    scores: np.ndarray
    n_scanned: int


class InvertedLists:
    """Immutable: ``added`` and ``removed`` return new lists, so a query in flight on another
    thread always sees one consistent version."""

    def __init__(self, centroids: np.ndarray, ids: Sequence[str] | np.ndarray, vectors: np.ndarray, labels: np.ndarray) -> None:
        self.centroids = np.ascontiguousarray(centroids, dtype=np.float32)
        id_array = np.asarray(list(ids), dtype=object)
        vectors = np.asarray(vectors, dtype=np.float32).reshape(len(id_array), self.dim)
        labels = np.asarray(labels, dtype=np.int64)
        order = np.argsort(labels, kind="stable")
        self.ids: np.ndarray = id_array[order]
        self.vectors = np.ascontiguousarray(vectors[order])
        self.labels = labels[order]
        self.sizes = np.bincount(self.labels, minlength=self.n_clusters)
        self.offsets = np.concatenate([[0], np.cumsum(self.sizes)])
        self._position = {doc_id: i for i, doc_id in enumerate(self.ids)}

    @classmethod
    def empty(cls, dim: int) -> InvertedLists:
        return cls(np.zeros((1, dim), np.float32), [], np.zeros((0, dim), np.float32), np.zeros(0, np.int64))

    @property
    def n_clusters(self) -> int:
        return len(self.centroids)

    @property
    def dim(self) -> int:
        return int(self.centroids.shape[1])

    def __len__(self) -> int:
        return len(self.ids)

    def __contains__(self, doc_id: str) -> bool:
        return doc_id in self._position

    def cluster_of(self, doc_id: str) -> int:
        return int(self.labels[self._position[doc_id]])

    def scan(self, query: np.ndarray, clusters: Sequence[int] | np.ndarray | None, top_k: int) -> ScanResult:
        """Exact top-k over the given clusters (all of them when ``clusters`` is None)."""
        if clusters is None:
            starts, ends = np.array([0]), np.array([len(self.ids)])
        else:
            starts, ends = self._ranges(clusters)
        lengths = ends - starts
        scores = np.empty(int(lengths.sum()), dtype=np.float32)
        filled = np.concatenate([[0], np.cumsum(lengths)])
        vectors = self.vectors
        for start, end, at in zip(starts.tolist(), ends.tolist(), filled.tolist(), strict=False):
            np.matmul(vectors[start:end], query, out=scores[at : at + end - start])
        k = min(top_k, len(scores))
        if k == 0:
            return ScanResult([], np.zeros(0, dtype=np.float32), 0)
        best = np.argpartition(-scores, k - 1)[:k]
        best = best[np.argsort(-scores[best], kind="stable")]
        block = np.searchsorted(filled, best, side="right") - 1
        rows = starts[block] + best - filled[block]
        return ScanResult(list(self.ids[rows]), scores[best], len(scores))

    def _ranges(self, clusters: Sequence[int] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Row ranges of the given clusters, neighbours merged so each range is one matmul."""
        chosen = np.unique(np.asarray(clusters, dtype=np.int64))
        chosen = chosen[self.sizes[chosen] > 0]
        starts, ends = self.offsets[chosen], self.offsets[chosen + 1]
        if len(chosen) > 1:
            gap = starts[1:] != ends[:-1]  # between cluster i and i + 1
            first, last = np.append(True, gap), np.append(gap, True)
            starts, ends = starts[first], ends[last]
        return starts, ends

    def added(self, ids: Sequence[str], vectors: np.ndarray, labels: np.ndarray) -> InvertedLists:
        return InvertedLists(
            self.centroids,
            np.concatenate([self.ids, np.asarray(list(ids), dtype=object)]),
            np.concatenate([self.vectors, vectors.astype(np.float32)]),
            np.concatenate([self.labels, labels]),
        )

    def removed(self, ids: Sequence[str]) -> InvertedLists:
        keep = ~np.isin(self.ids, np.asarray(list(ids), dtype=object))
        return InvertedLists(self.centroids, self.ids[keep], self.vectors[keep], self.labels[keep])
