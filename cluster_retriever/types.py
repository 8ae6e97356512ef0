"""The shared vocabulary: what a search is asked (``SearchParams`` and its ``Restriction``)
and what it answers (``SearchResult`` with its ``SearchStats``).

Every layer takes these objects, never loose argument lists: the retriever and the vector
store hold one ``SearchParams`` and hand it down; the index owns its own and a call overrides
it, as FAISS's ``SearchParameters`` do. Parameters are validated once, here, when the object
is made; below this boundary nothing checks them again.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal, Protocol

from cluster_retriever.filters import NO_RESTRICTION, Restriction

__all__ = [
    "DEFAULT_TARGET_RECALL",
    "EXACT_SCAN_MAX_FLOATS",
    "MODES",
    "NO_RESTRICTION",
    "Mode",
    "Restriction",
    "SearchParams",
    "SearchResult",
    "SearchStats",
    "SearchableIndex",
    "check_positive_int",
]

if TYPE_CHECKING:
    import numpy as np
    from llama_index.core.base.embeddings.base import BaseEmbedding
    from llama_index.core.schema import NodeWithScore
    from llama_index.core.vector_stores.types import MetadataFilters

Mode = Literal["routed", "flat", "strict"]
MODES: tuple[str, ...] = ("routed", "flat", "strict")
ScanKernel = Literal["auto", "numpy", "faiss", "sq8", "pq4"]
SCAN_KERNELS: tuple[str, ...] = ("auto", "numpy", "faiss", "sq8", "pq4")

DEFAULT_TARGET_RECALL = 0.96
EXACT_SCAN_MAX_FLOATS = 2_000_000
"""Adaptive routing scans everything that matches below this many floats (vectors x dimension):
measured here, an exact scan of 5,000 384-d vectors costs what routing does (0.28 ms each)."""


def check_positive_int(name: str, value: Any, allow_none: bool = False) -> int | None:
    """``value`` as an int, refusing bools, floats and non-positive numbers (numpy ints are fine)."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be a positive int{' or None' if allow_none else ''}, not {value!r}.")
    return int(value)


@dataclass(frozen=True)
class SearchParams:
    """How a query searches, validated once when made. The index owns one (its defaults); a
    call may pass another (``index.search(vector, k, params)``); ``with_(...)`` gives a copy
    with some fields changed.

    - ``mode``: ``"routed"`` (the default), ``"flat"`` (every cluster: exact search) or
      ``"strict"`` (the nearest cluster only, widened only to fill ``k``).
    - ``n_probe``: clusters probed in routed mode; ``None``: adaptive, every cluster whose
      centroid lies within the similarity band that the index's calibration says reaches
      ``target_recall`` of exact search's top-k (an index calibrated before bands, or not at
      all: a budget of documents, plus boundary clusters within ``boundary_margin``, cosine).
    - ``exact_scan_max_floats``: adaptive routing scans everything that matches when that is
      at most this many floats (matching vectors x dimension); 0 routes every query.
    - ``scan_kernel``: ``"auto"`` (the default: ``"sq8"`` for routed scans once its codes
      are built, in the background, when FAISS is installed; ``"numpy"`` otherwise),
      ``"numpy"`` (float32 rows), ``"faiss"`` (FAISS IVF-Flat, same results), ``"sq8"`` or
      ``"pq4"`` (compressed codes, then exact refinement; the ``[faiss]`` extra). Filtered
      scans score the float rows of the survivors whatever the kernel; ``"auto"`` scores them
      for exact scans too (``flat``, small indexes).
    - ``restriction``: filters, node ids and doc ids, applied inside the scan.
    """

    mode: Mode = "routed"
    n_probe: int | None = None
    target_recall: float = DEFAULT_TARGET_RECALL
    boundary_margin: float = 0.01
    exact_scan_max_floats: int = EXACT_SCAN_MAX_FLOATS
    scan_kernel: ScanKernel = "auto"
    restriction: Restriction = field(default=NO_RESTRICTION)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, not {self.mode!r}.")
        check_positive_int("n_probe", self.n_probe, allow_none=True)
        recall = self.target_recall
        if isinstance(recall, bool) or not isinstance(recall, numbers.Real) or not 0.0 < recall <= 1.0:
            raise ValueError(f"target_recall must be in (0, 1], not {recall!r}.")
        margin = self.boundary_margin
        if isinstance(margin, bool) or not isinstance(margin, numbers.Real) or not 0.0 <= margin <= 2.0:
            raise ValueError(f"boundary_margin must be a cosine margin in [0, 2], not {margin!r}.")
        floats = self.exact_scan_max_floats
        if isinstance(floats, bool) or not isinstance(floats, numbers.Integral) or floats < 0:
            raise ValueError(f"exact_scan_max_floats must be an int >= 0 (0: always route), not {floats!r}.")
        if self.scan_kernel not in SCAN_KERNELS:
            raise ValueError(f"scan_kernel must be one of {SCAN_KERNELS}, not {self.scan_kernel!r}.")
        if not isinstance(self.restriction, Restriction):
            raise TypeError(
                f"restriction must be a Restriction, not {type(self.restriction).__name__}: "
                f"use Restriction.of(filters=..., node_ids=..., doc_ids=...)."
            )
        object.__setattr__(self, "target_recall", float(recall))
        object.__setattr__(self, "boundary_margin", float(margin))

    def with_(self, **changes: Any) -> SearchParams:
        """A copy with ``changes`` (validated again)."""
        return replace(self, **changes)

    def restricted(
        self,
        filters: MetadataFilters | None = None,
        node_ids: Sequence[str] | None = None,
        doc_ids: Sequence[str] | None = None,
    ) -> SearchParams:
        """A copy restricted to ``filters``, ``node_ids`` and ``doc_ids`` (replacing any restriction)."""
        return replace(self, restriction=Restriction.of(filters, node_ids, doc_ids))

    @property
    def adaptive(self) -> bool:
        return self.mode == "routed" and self.n_probe is None


@dataclass(frozen=True)
class SearchStats:
    """What one query cost: clusters probed, vectors scanned and the fraction of the corpus;
    ``exact``: everything that matches was scanned (a small index or filter, or ``flat``);
    ``far_from_clusters``: scanned exactly because the query's nearest centroid lies below the
    outlier fence (routing cannot be trusted there; ``ClusterIndex.calibrate(queries)`` sets
    the fence from real queries)."""

    clusters_probed: int
    vectors_scanned: int
    fraction_scanned: float
    exact: bool = False
    far_from_clusters: bool = False


@dataclass(frozen=True)
class SearchResult:
    """The hits of one query and what it cost; each call gets its own. ``ids`` and ``scores``
    are the scan's top-k (with ``with_nodes=False`` the only output: nothing is fetched)."""

    hits: list[NodeWithScore]
    stats: SearchStats
    ids: list[str] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)


class SearchableIndex(Protocol):
    """What a retriever needs of an index (``ClusterIndex`` is one): its model, its default
    parameters and ``search``."""

    embed_model: BaseEmbedding

    @property
    def search_params(self) -> SearchParams: ...

    def search(
        self, query: np.ndarray, top_k: int, params: SearchParams | None = None, *, with_nodes: bool = True
    ) -> SearchResult: ...
