"""ClusterRetriever: a LlamaIndex retriever that searches only the clusters a query routes to."""

from __future__ import annotations

import asyncio
from contextvars import ContextVar
from typing import Any

import numpy as np
from llama_index.core.callbacks import CallbackManager
from llama_index.core.retrievers import BaseRetriever
from llama_index.core.schema import NodeWithScore, QueryBundle, QueryType
from llama_index.core.vector_stores.types import MetadataFilters

from cluster_retriever.embeddings import embed_query, unit_rows
from cluster_retriever.errors import EmptyQueryError
from cluster_retriever.types import (
    DEFAULT_TARGET_RECALL,
    Mode,
    SearchableIndex,
    SearchParams,
    SearchResult,
    SearchStats,
    check_positive_int,
)

RetrievalStats = SearchStats
"""What one query cost (clusters probed, vectors scanned, fraction of the corpus scanned)."""


class ClusterRetriever(BaseRetriever):
    """Route a query to its nearest clusters, then search exactly inside them.

    Args:
        index: the ``ClusterIndex`` to search (any ``SearchableIndex``).
        similarity_top_k: number of nodes returned.
        mode: ``"routed"`` (default), ``"flat"`` (every cluster: exact search) or
            ``"strict"`` (the nearest cluster only: the hard noise filter; the next nearest
            clusters join only when it holds fewer than ``similarity_top_k`` nodes).
        n_probe: how many nearest clusters to search in routed mode; ``None`` (default)
            probes adaptively: every cluster within the similarity band that reaches
            ``target_recall`` by the index's own calibration.
        target_recall: the share of exact search's top-k that adaptive routing promises
            (calibrated per index on pseudo-queries from its own data, see ``calibration``).
        boundary_margin: how close (in cosine) a further centroid must be to the last
            probed one for a budget of documents (an index calibrated before bands) to
            search it too.
        filters, node_ids, doc_ids: LlamaIndex ``MetadataFilters`` (Chroma's operators,
            and/or nesting) and id restrictions, applied inside the scan: the retriever
            probes further clusters until ``similarity_top_k`` matching nodes are covered.
        params: a whole ``SearchParams``, used instead of the settings above; without it,
            the index's own ``search_params`` with those settings.

    Scores are cosine similarities; each node's metadata carries its ``cluster_id``.

    Example::

        from llama_index.core.query_engine import RetrieverQueryEngine
        from cluster_retriever import ClusterIndex, ClusterRetriever

        index = ClusterIndex.open(path="./chroma")
        retriever = ClusterRetriever(index, similarity_top_k=5)
        nodes = retriever.retrieve("product marketing manager")
        engine = RetrieverQueryEngine.from_args(retriever, llm=my_llm)
    """

    def __init__(
        self,
        index: SearchableIndex,
        similarity_top_k: int = 10,
        mode: Mode = "routed",
        n_probe: int | None = None,
        boundary_margin: float = 0.01,
        filters: MetadataFilters | None = None,
        node_ids: list[str] | None = None,
        doc_ids: list[str] | None = None,
        target_recall: float = DEFAULT_TARGET_RECALL,
        params: SearchParams | None = None,
        callback_manager: CallbackManager | None = None,
        verbose: bool = False,
        **kwargs: Any,
    ) -> None:
        self.index = index
        self.similarity_top_k: int = check_positive_int("similarity_top_k", similarity_top_k) or 1
        if params is None:  # validated once, here: SearchParams refuses what it cannot use
            settings = {"mode": mode, "n_probe": n_probe, "boundary_margin": boundary_margin, "target_recall": target_recall}
            params = index.search_params.with_(**settings).restricted(filters, node_ids, doc_ids)
        self.params: SearchParams = params
        # Per thread and per asyncio task: concurrent callers never read each other's stats.
        self._last_stats: ContextVar[SearchStats | None] = ContextVar(f"last_stats_{id(self)}", default=None)
        self._latest: SearchStats | None = None
        super().__init__(callback_manager=callback_manager, verbose=verbose, **kwargs)

    @property
    def last_stats(self) -> SearchStats | None:
        """What the last query of this thread or asyncio task cost, else the last query
        anywhere (single-caller convenience: ``search`` returns each call's own stats)."""
        return self._last_stats.get() or self._latest

    def search(self, query: QueryType, with_nodes: bool = True) -> SearchResult:
        """Like ``retrieve`` (no callbacks), returning the hits with this call's own stats;
        ``with_nodes=False``: ids and scores only, no documents read."""
        bundle = QueryBundle(query_str=query) if isinstance(query, str) else query
        result = self.index.search(self._query_vector(bundle), self.similarity_top_k, self.params, with_nodes=with_nodes)
        self._remember(result.stats)
        return result

    def _remember(self, stats: SearchStats) -> None:
        self._last_stats.set(stats)
        self._latest = stats

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        return self.search(query_bundle).hits

    async def _aretrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        # Local embedders compute inside their "async" methods on the loop's thread, so the
        # embedding, like the scan, runs in a worker thread: the event loop never waits on it.
        result = await asyncio.to_thread(self.search, query_bundle)
        self._remember(result.stats)  # the worker thread's context is not this task's
        return result.hits

    def _query_vector(self, query_bundle: QueryBundle) -> np.ndarray:
        if query_bundle.embedding is None:
            return embed_query(self.index.embed_model, _query_text(query_bundle))
        vector: np.ndarray = unit_rows(np.asarray([query_bundle.embedding], dtype=np.float32))[0]
        return vector


def _query_text(query_bundle: QueryBundle) -> str:
    text = query_bundle.query_str
    if not text or not text.strip():
        raise EmptyQueryError("The query is empty: pass some text to retrieve for.")
    return text
