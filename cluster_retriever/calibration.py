"""Calibrating the probe budget to a recall target, per index, on the index's own data.

At build and at every re-clustering, a sample of the stored vectors serves as pseudo-queries
(leave-one-out: a document is not its own neighbour). For each, the exact top-k is known,
and so is how many documents, in nearest-centroid order, must be scanned before each of
those neighbours' clusters is reached. That gives recall against exact search as a function
of the scan budget; the smallest budget reaching each target is stored in the manifest as a
factor of ``k^(1/3)`` mean-sized clusters, so the rule keeps holding as the index grows.

The budget is the smallest at which ``route`` itself (boundary clusters included) reaches
the target on those queries, so the calibration delivers its target on queries like them,
not more. Pseudo-queries are documents; users' questions may sit closer to their neighbours
or further (bench/quality_guard.py: real CISI queries over grown CISI vectors got 0.976 for
0.95, BBC headlines at depth 100 0.921 for 0.96). ``ClusterIndex.calibrate(queries)`` calibrates
on a sample of real queries instead, and then delivers the target on queries like those.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from llama_index.core.base.embeddings.base import BaseEmbedding

from cluster_retriever.embeddings import embed_query, unit_rows
from cluster_retriever.routing import default_scan_budget, route
from cluster_retriever.scan.lists import InvertedLists, outlier_fence

TARGETS = (0.9, 0.95, 0.96, 0.97, 0.98, 0.99, 0.999)
DEPTHS = (10, 100)
PSEUDO_QUERIES = 256
MIN_DOCS = 50  # below this there is nothing to calibrate: small indexes are scanned exactly
MIN_QUERIES = 20  # real queries ``ClusterIndex.calibrate`` asks for at least
_BATCH = 32

Calibration = dict[str, dict[str, float]]
"""depth (as text) -> target (as text) -> budget factor, in ``k^(1/3)`` mean-sized clusters."""


def calibrate(lists: InvertedLists, seed: int = 0, queries: np.ndarray | None = None) -> Calibration:
    """The budget factor reaching each target at each depth, as ``route`` itself probes at
    the default parameters (boundary clusters included): on ``queries`` (unit vectors of real
    queries) when given, else on pseudo-queries sampled from ``lists``."""
    n = len(lists)
    if n < MIN_DOCS:
        return {}
    depth_max = min(max(DEPTHS), n - 1)
    batches: list[tuple[np.ndarray, np.ndarray | None]]  # query vectors, and their rows when they are documents
    if queries is None:
        sample = np.random.default_rng(seed).choice(n, size=min(PSEUDO_QUERIES, n), replace=False)
        batches = [(lists.vectors[rows], rows) for rows in np.array_split(sample, -(-len(sample) // _BATCH))]
    else:
        batches = [(queries[start : start + _BATCH], None) for start in range(0, len(queries), _BATCH)]
    prefixes: list[np.ndarray] = []  # per query: docs scanned before each neighbour's cluster
    neighbours: list[np.ndarray] = []  # per query: each neighbour's cluster
    similarities: list[np.ndarray] = []
    for batch, rows in batches:
        scores = batch @ lists.vectors.T
        if rows is not None:
            scores[np.arange(len(rows)), rows] = -np.inf  # leave one out: a document is not its own neighbour
        nearest = np.argpartition(-scores, depth_max - 1, axis=1)[:, :depth_max]
        nearest = np.take_along_axis(nearest, np.argsort(-np.take_along_axis(scores, nearest, 1), axis=1), 1)
        similarity = batch @ lists.centroids.T
        similarity[:, lists.sizes == 0] = -np.inf
        order = np.argsort(-similarity, axis=1)
        sizes_in_order = lists.sizes[order]
        before = np.cumsum(sizes_in_order, axis=1) - sizes_in_order  # docs scanned before reaching each cluster
        prefix_of_cluster = np.empty_like(before)
        np.put_along_axis(prefix_of_cluster, order, before, axis=1)
        prefixes.append(np.take_along_axis(prefix_of_cluster, lists.labels[nearest], axis=1))
        neighbours.append(lists.labels[nearest])
        similarities.append(similarity)
    covered, clusters, similarity = np.concatenate(prefixes), np.concatenate(neighbours), np.concatenate(similarities)
    unit = default_scan_budget(lists.sizes, 1.0)
    table: Calibration = {}
    for depth in DEPTHS:
        width = min(depth, depth_max)
        by_target = table[str(depth)] = {}
        for target in TARGETS:
            # Scanning nearest clusters up to this budget alone reaches the target; route's
            # boundary clusters reach it on less: the smallest factor at which they do.
            ceiling = _smallest_budget(covered[:, :width], target) / unit
            by_target[str(target)] = _smallest_routed_factor(similarity, lists.sizes, clusters[:, :width], target, ceiling, depth)
    return table


def calibrated_on(lists: InvertedLists, queries: np.ndarray) -> dict[str, Calibration | float | None]:
    """The manifest fields a calibration on real ``queries`` sets: the routing budget, and the
    off-topic fence (a query further from every centroid than these queries' outer fence is
    searched exactly)."""
    nearest = np.max(queries @ lists.centroids.T, axis=1)  # each query's nearest centroid
    return {"calibration": calibrate(lists, queries=queries), "query_fence": outlier_fence(nearest)}


def calibration_queries(embed_model: BaseEmbedding, queries: Sequence[str] | np.ndarray) -> np.ndarray:
    """Real queries to calibrate on, as unit rows: texts are embedded with the index's model."""
    if isinstance(queries, np.ndarray):
        vectors = np.atleast_2d(np.asarray(queries, dtype=np.float32))
    elif all(isinstance(query, str) for query in queries):
        vectors = np.asarray([embed_query(embed_model, query) for query in queries], dtype=np.float32).reshape(len(queries), -1)
    else:
        raise TypeError("queries must be query texts or an array of their embeddings (one row a query).")
    if len(vectors) < MIN_QUERIES:
        raise ValueError(
            f"Calibrating on {len(vectors)} queries would promise little: give at least {MIN_QUERIES} "
            f"real queries (a sample of your users' questions, or an evaluation set's)."
        )
    return unit_rows(vectors)


def _smallest_routed_factor(
    similarity: np.ndarray, sizes: np.ndarray, clusters: np.ndarray, needed: float, ceiling: float, min_docs: int
) -> float:
    """The smallest budget factor (to 2%) at which ``route`` at the default parameters probes
    the clusters of at least ``needed`` of the neighbours (``clusters``: query x neighbour)."""

    def recall(factor: float) -> float:
        found = 0
        for row, wanted in zip(similarity, clusters, strict=True):
            chosen = route(row, sizes, min_docs=min_docs, budget_factor=factor)
            found += wanted.size if chosen is None else int(np.count_nonzero(np.isin(wanted, chosen)))
        return found / clusters.size

    lo, hi = 0.25 * ceiling, ceiling
    if recall(hi) < needed:  # cannot happen (the boundary clusters only add), kept as the safe side
        return ceiling
    while hi - lo > 0.02 * hi:
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if recall(mid) >= needed else (mid, hi)
    return hi


def _smallest_budget(prefix: np.ndarray, needed: float) -> float:
    """The smallest budget B for which the mean share of neighbours with prefix < B reaches
    ``needed``; a neighbour's cluster is probed once the budget exceeds the documents before it."""
    candidates = np.unique(prefix)
    lo, hi = 0, len(candidates) - 1
    while lo < hi:  # recall(B) = mean(prefix < B) grows with B
        mid = (lo + hi) // 2
        if float(np.mean(prefix < candidates[mid] + 1)) >= needed:
            hi = mid
        else:
            lo = mid + 1
    return float(candidates[lo] + 1)


def budget_factor(calibration: Calibration, top_k: int, target: float) -> float | None:
    """The stored factor for ``top_k`` and the smallest stored target at or above ``target``
    (None when the index has no calibration, or the target is above every stored one).
    Deeper than 10, it never scans less than depth 10 needs."""
    factor = _factor_at(calibration.get("10" if top_k <= 10 else "100", {}), target)
    if factor is None or top_k <= 10:
        return factor
    return max(factor, _factor_at(calibration.get("10", {}), target) or 0.0)


def _factor_at(by_target: dict[str, float], target: float) -> float | None:
    reaching = sorted((float(t), f) for t, f in by_target.items() if float(t) >= target - 1e-12)
    return reaching[0][1] if reaching else None
