"""Calibrating the probe budget to a recall target, per index, on the index's own data.

At build and at every re-clustering, a sample of the stored vectors serves as pseudo-queries
(leave-one-out: a document is not its own neighbour). For each, the exact top-k is known,
and so is how many documents, in nearest-centroid order, must be scanned before each of
those neighbours' clusters is reached. That gives recall against exact search as a function
of the scan budget; the smallest budget reaching each target is stored in the manifest as a
factor of ``k^(1/3)`` mean-sized clusters, so the rule keeps holding as the index grows.

Pseudo-queries are documents, which sit closer to their neighbours than users' questions
do, so they miss less: in the trial quoted in the routing issue (a 5k scientific collection)
real queries missed about 1.5x as often as document-title pseudo-queries. The pseudo-query
target is tightened accordingly: to promise recall T on real queries, the pseudo-queries must
miss at most ``PSEUDO_MISS_SHARE * (1 - T)``.
"""

from __future__ import annotations

import numpy as np

from cluster_retriever.routing import default_scan_budget
from cluster_retriever.scan.lists import InvertedLists

TARGETS = (0.9, 0.95, 0.98, 0.99, 0.999)
DEPTHS = (10, 100)
PSEUDO_QUERIES = 256
PSEUDO_MISS_SHARE = 0.6
MIN_DOCS = 50  # below this there is nothing to calibrate: small indexes are scanned exactly
_BATCH = 32

Calibration = dict[str, dict[str, float]]
"""depth (as text) -> target (as text) -> budget factor, in ``k^(1/3)`` mean-sized clusters."""


def calibrate(lists: InvertedLists, seed: int = 0) -> Calibration:
    """The budget factor reaching each target at each depth on pseudo-queries from ``lists``."""
    n = len(lists)
    if n < MIN_DOCS:
        return {}
    rng = np.random.default_rng(seed)
    sample = rng.choice(n, size=min(PSEUDO_QUERIES, n), replace=False)
    depth_max = min(max(DEPTHS), n - 1)
    prefixes: dict[int, list[np.ndarray]] = {
        depth: [] for depth in DEPTHS
    }  # per query: docs scanned before each neighbour's cluster
    for start in range(0, len(sample), _BATCH):
        rows = sample[start : start + _BATCH]
        queries = lists.vectors[rows]
        scores = queries @ lists.vectors.T
        scores[np.arange(len(rows)), rows] = -np.inf  # leave one out
        nearest = np.argpartition(-scores, depth_max - 1, axis=1)[:, :depth_max]
        nearest = np.take_along_axis(nearest, np.argsort(-np.take_along_axis(scores, nearest, 1), axis=1), 1)
        similarity = queries @ lists.centroids.T
        similarity[:, lists.sizes == 0] = -np.inf
        order = np.argsort(-similarity, axis=1)
        sizes_in_order = lists.sizes[order]
        before = np.cumsum(sizes_in_order, axis=1) - sizes_in_order  # docs scanned before reaching each cluster
        prefix_of_cluster = np.empty_like(before)
        np.put_along_axis(prefix_of_cluster, order, before, axis=1)
        neighbour_prefix = np.take_along_axis(prefix_of_cluster, lists.labels[nearest], axis=1)
        for depth in DEPTHS:
            prefixes[depth].append(neighbour_prefix[:, : min(depth, depth_max)])
    unit = default_scan_budget(lists.sizes, 1.0)
    table: Calibration = {}
    for depth in DEPTHS:
        covered = np.concatenate(prefixes[depth])  # query x neighbour
        table[str(depth)] = {str(target): _smallest_budget(covered, target) / unit for target in TARGETS}
    return table


def _smallest_budget(prefix: np.ndarray, target: float) -> float:
    """The smallest budget B for which the mean share of neighbours with prefix < B reaches
    the tightened target; a neighbour's cluster is probed once the budget exceeds the
    documents before it."""
    needed = 1.0 - PSEUDO_MISS_SHARE * (1.0 - target)
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
