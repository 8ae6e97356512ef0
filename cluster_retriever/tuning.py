"""Choosing ``n_probe`` for a recall target, measured on your own queries.

The adaptive default holds a fixed budget of documents; how much of the exact top-k that
budget finds depends on the data. ``tune_n_probe`` measures it: for a sample of real (or
typical) queries it compares routed search at growing probe counts with exact search over
the whole index, and returns the smallest probe count that reaches the target.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from cluster_retriever.embeddings import embed_query, unit_rows
from cluster_retriever.errors import EmptyQueryError
from cluster_retriever.index import ClusterIndex
from cluster_retriever.index.search import check_query_vector
from cluster_retriever.routing import route
from cluster_retriever.scan.lists import InvertedLists
from cluster_retriever.types import SearchParams

PROBE_STEPS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024)


@dataclass(frozen=True)
class ProbePoint:
    """Routed search at one setting, averaged over the queries."""

    n_probe: int | None  # None: the adaptive default
    recall: float  # share of the exact top-k found
    fraction_scanned: float


@dataclass(frozen=True)
class ProbeTuning:
    """``n_probe`` is the smallest probe count reaching ``target_recall`` (``None`` if only
    probing every cluster does); ``default`` is what the adaptive default gives on the same
    queries; ``curve`` every setting measured."""

    target_recall: float
    top_k: int
    n_probe: int | None
    default: ProbePoint
    curve: list[ProbePoint]


def tune_n_probe(
    index: ClusterIndex,
    queries: Sequence[str] | np.ndarray,
    target_recall: float = 0.95,
    top_k: int = 10,
) -> ProbeTuning:
    """Measure recall@``top_k`` against exact search for growing ``n_probe`` on ``queries``
    (texts, or query embeddings as a 2-d array) and pick the smallest that reaches the target.

    Example::

        tuning = tune_n_probe(index, sample_of_user_questions, target_recall=0.95)
        retriever = ClusterRetriever(index, n_probe=tuning.n_probe)
    """
    if not 0.0 < target_recall <= 1.0:
        raise ValueError(f"target_recall must be in (0, 1], not {target_recall!r}.")
    if top_k < 1:
        raise ValueError(f"top_k must be >= 1, not {top_k!r}.")
    vectors = _query_vectors(index, queries)
    lists = index.lists
    exact = [set(lists.scan(vector, None, top_k).ids) for vector in vectors]
    default = _measure(lists, vectors, exact, top_k, None)
    curve = []
    for n_probe in (*(step for step in PROBE_STEPS if step < lists.n_clusters), lists.n_clusters):
        curve.append(_measure(lists, vectors, exact, top_k, n_probe))
        if curve[-1].recall >= target_recall:
            break
    last = curve[-1]  # the first setting reaching the target, or every cluster
    reached = last.recall >= target_recall and last.n_probe is not None and last.n_probe < lists.n_clusters
    return ProbeTuning(target_recall, top_k, last.n_probe if reached else None, default, curve)


def _query_vectors(index: ClusterIndex, queries: Sequence[str] | np.ndarray) -> np.ndarray:
    if isinstance(queries, np.ndarray):
        vectors = unit_rows(np.atleast_2d(queries).astype(np.float32))
    else:
        texts = [query for query in queries if query and query.strip()]
        vectors = np.array([embed_query(index.embed_model, text) for text in texts], dtype=np.float32)
    if len(vectors) == 0:
        raise EmptyQueryError("tune_n_probe needs at least one non-empty query.")
    for vector in vectors:
        check_query_vector(index.manifest, vector)
    return vectors


def _measure(lists: InvertedLists, vectors: np.ndarray, exact: list[set[str]], top_k: int, n_probe: int | None) -> ProbePoint:
    recalls, scanned = [], []
    for vector, truth in zip(vectors, exact, strict=False):
        result = lists.scan(vector, route(lists.centroids @ vector, lists.sizes, SearchParams(n_probe=n_probe)), top_k)
        recalls.append(len(truth.intersection(result.ids)) / max(len(truth), 1))
        scanned.append(result.n_scanned / max(len(lists), 1))
    return ProbePoint(n_probe, float(np.mean(recalls)), float(np.mean(scanned)))
