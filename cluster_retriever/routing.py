"""Which clusters a query probes.

- ``flat``: every cluster (exact search, the baseline).
- ``strict``: only the nearest cluster (the hard noise filter).
- ``routed`` with ``n_probe``: the ``n_probe`` nearest clusters.
- ``routed`` adaptive (the default): ``default_n_probe(k)`` nearest clusters, plus any
  further cluster (up to half as many again) whose centroid is almost as close as the last
  one probed, so a query near a cluster boundary also searches the other side.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np

Mode = Literal["routed", "flat", "strict"]
MODES: tuple[str, ...] = ("routed", "flat", "strict")

PROBE_FACTOR = 3.2
"""Adaptive probing starts from ceil(PROBE_FACTOR * k ** (1/3)) clusters (15 of CISI's 99):
the probed share of clusters falls like k ** (-2/3) as the corpus, and k, grow."""


def default_n_probe(n_clusters: int) -> int:
    return max(1, min(n_clusters, math.ceil(PROBE_FACTOR * n_clusters ** (1 / 3))))


def route(
    query: np.ndarray,
    centroids: np.ndarray,
    sizes: np.ndarray,
    mode: Mode = "routed",
    n_probe: int | None = None,
    boundary_margin: float = 0.01,
) -> np.ndarray | None:
    """Cluster ids to scan, nearest first; ``None`` means all of them."""
    if mode == "flat":
        return None
    similarity = centroids @ query
    n_nonempty = int(np.count_nonzero(sizes))
    if n_nonempty < len(sizes):
        similarity = np.where(sizes > 0, similarity, -np.inf)
    base = 1 if mode == "strict" else n_probe or default_n_probe(len(centroids))
    adaptive = mode == "routed" and n_probe is None
    order = _nearest(similarity, min(n_nonempty, base + base // 2 if adaptive else base))
    if not adaptive or base >= len(order):
        return order[:base]
    # Boundary queries: extend past the base (by at most half) while the next centroid is nearly as close.
    threshold = similarity[order[base - 1]] - boundary_margin
    n_extra = int(np.count_nonzero(similarity[order[base:]] >= threshold))
    return order[: base + n_extra]


def _nearest(similarity: np.ndarray, count: int) -> np.ndarray:
    """Indices of the ``count`` largest similarities, largest first (a partial sort: routing
    runs on every query and needs only the head of the order)."""
    if count < len(similarity):
        head = np.argpartition(-similarity, count - 1)[:count]
    else:
        head = np.arange(len(similarity))
    return head[np.argsort(-similarity[head], kind="stable")]
