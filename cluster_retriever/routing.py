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
    nonempty = np.flatnonzero(sizes)
    order = nonempty[np.argsort(-similarity[nonempty], kind="stable")]
    if mode == "strict":
        return order[:1]
    if n_probe is not None:
        return order[:n_probe]
    base = default_n_probe(len(centroids))
    if base >= len(order):
        return order
    # Boundary queries: extend past the base (by at most half) while the next centroid is nearly as close.
    threshold = similarity[order[base - 1]] - boundary_margin
    n_extra = int(np.count_nonzero(similarity[order[base : base + base // 2]] >= threshold))
    return order[: base + n_extra]
