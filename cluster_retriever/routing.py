"""Which clusters a query probes.

- ``flat``: every cluster (exact search, the baseline).
- ``strict``: only the nearest cluster (the hard noise filter).
- ``routed`` with ``n_probe``: the ``n_probe`` nearest clusters.
- ``routed`` adaptive (the default): the nearest clusters until they hold ``default_scan_budget``
  documents, plus any further cluster (up to half as many again) whose centroid is almost as
  close as the last one probed, so a query near a cluster boundary also searches the other side.
- ``routed`` within a calibrated ``band`` (the default for the top 10 of an index calibrated
  with bands, see ``calibration.BAND``): every cluster whose centroid is within ``band``
  (cosine) of the nearest one, so a query whose neighbours spread over many near-equal
  clusters probes them all, and one deep inside its cluster probes few. Deeper searches probe
  the longer of the budget's and the band's prefixes.
"""

from __future__ import annotations

import math

import numpy as np

from cluster_retriever.types import SearchParams

PROBE_FACTOR = 5.8
"""The adaptive default scans as many documents as PROBE_FACTOR * k ** (1/3) clusters of mean
size hold: 19% of CISI's 1,460 documents (k=199), 4% of 100k (k=1,644). The scanned share falls
like k ** (-2/3) as the corpus, and k, grow. Counting documents rather than clusters keeps that
share (and the latency) when KMeans leaves clusters of very different sizes."""
DEFAULT_PARAMS = SearchParams()


def budget_in_clusters(n_clusters: int, factor: float = PROBE_FACTOR) -> float:
    """The adaptive budget, in clusters of mean size."""
    return float(factor * n_clusters ** (1 / 3))


def default_scan_budget(sizes: np.ndarray, factor: float = PROBE_FACTOR) -> float:
    """Documents the adaptive rule scans before its boundary extension."""
    return budget_in_clusters(len(sizes), factor) * float(sizes.sum()) / len(sizes)


def route(
    similarity: np.ndarray,
    sizes: np.ndarray,
    params: SearchParams = DEFAULT_PARAMS,
    min_docs: int = 0,
    budget_factor: float | None = None,
    band: float | None = None,
) -> np.ndarray | None:
    """Cluster ids to scan, nearest first, for a query whose cosine to each centroid is
    ``similarity`` (``centroids @ query``); ``None`` means all of them. ``params`` gives the
    mode, ``n_probe`` and ``boundary_margin``; ``budget_factor`` the calibrated adaptive budget
    (``PROBE_FACTOR`` when None), and ``band`` the calibrated similarity band: alone, it
    replaces the budget and its boundary extension; beside a budget, the longer of the two
    nearest-first prefixes is probed. The probed clusters always hold at least ``min_docs``
    documents (or all there are), so a query asking for ``k`` results gets ``k`` whenever the
    index holds that many."""
    if params.mode == "flat":
        return None
    n_nonempty = int(np.count_nonzero(sizes))
    if n_nonempty == 0:
        return np.zeros(0, dtype=np.int64)
    if n_nonempty < len(sizes):
        similarity = np.where(sizes > 0, similarity, -np.inf)
    if params.mode == "strict" or params.n_probe is not None:
        chosen = _nearest(similarity, min(n_nonempty, 1 if params.mode == "strict" else params.n_probe or 1))
    elif band is not None and budget_factor is None:
        chosen = _within(similarity, band)
    else:
        factor = PROBE_FACTOR if budget_factor is None else budget_factor
        order, base = _nearest_within_budget(similarity, sizes, n_nonempty, factor)
        # Boundary queries: extend past the base (by at most half) while the next centroid is nearly as close.
        threshold = similarity[order[base - 1]] - params.boundary_margin
        n_extra = int(np.count_nonzero(similarity[order[base : base + base // 2]] >= threshold))
        chosen = order[: base + n_extra]
        if band is not None:  # the budget joined with a band: whichever probes further
            within = _within(similarity, band)
            chosen = within if len(within) > len(chosen) else chosen
    if sizes[chosen].sum() >= min_docs or len(chosen) == n_nonempty:
        return chosen
    order = _nearest(similarity, n_nonempty)
    enough = int(np.searchsorted(np.cumsum(sizes[order]), min_docs)) + 1
    return order[: max(len(chosen), min(enough, n_nonempty))]


def _nearest_within_budget(similarity: np.ndarray, sizes: np.ndarray, n_nonempty: int, factor: float) -> tuple[np.ndarray, int]:
    """The head of the nearest-first order, long enough for the budget and its extension, and
    how many of its clusters the budget takes. Sorts a few times the expected count first and
    the whole order only when the nearest clusters are unusually small."""
    budget = default_scan_budget(sizes, factor)
    count = min(n_nonempty, max(1, 4 * math.ceil(budget_in_clusters(len(sizes), factor))))  # a zero budget: the nearest
    while True:
        order = _nearest(similarity, count)
        base = min(count, int(np.searchsorted(np.cumsum(sizes[order]), budget)) + 1)
        if count == n_nonempty or base + base // 2 <= count:
            return order, base
        count = n_nonempty


def _within(similarity: np.ndarray, band: float) -> np.ndarray:
    """Indices of the similarities within ``band`` of the largest, largest first."""
    head = np.flatnonzero(similarity >= np.max(similarity) - band)
    return head[np.argsort(-similarity[head], kind="stable")]


def _nearest(similarity: np.ndarray, count: int) -> np.ndarray:
    """Indices of the ``count`` largest similarities, largest first (a partial sort: routing
    runs on every query and needs only the head of the order)."""
    if count < len(similarity):
        head = np.argpartition(-similarity, count - 1)[:count]
    else:
        head = np.arange(len(similarity))
    return head[np.argsort(-similarity[head], kind="stable")]
