"""ClusterRetriever: a LlamaIndex retriever that searches only the clusters a query routes to."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import numpy as np
from llama_index.core.callbacks import CallbackManager
from llama_index.core.retrievers import BaseRetriever
from llama_index.core.schema import NodeWithScore, QueryBundle

from cluster_retriever.embeddings import embed_query, unit_rows
from cluster_retriever.errors import EmptyQueryError
from cluster_retriever.index import ClusterIndex
from cluster_retriever.routing import MODES, Mode, route


@dataclass(frozen=True)
class RetrievalStats:
    """What the last query cost: clusters probed and the fraction of the corpus scanned."""

    clusters_probed: int
    vectors_scanned: int
    fraction_scanned: float


class ClusterRetriever(BaseRetriever):
    """Route a query to its nearest clusters, then search exactly inside them.

    Args:
        index: the ``ClusterIndex`` to search.
        similarity_top_k: number of nodes returned.
        mode: ``"routed"`` (default), ``"flat"`` (every cluster: exact search) or
            ``"strict"`` (the nearest cluster only: the hard noise filter).
        n_probe: how many nearest clusters to search in routed mode; ``None`` (default)
            probes adaptively, more clusters when the query sits near a cluster boundary.
        boundary_margin: how close (in cosine) a further centroid must be to the last
            probed one for adaptive probing to search it too.

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
        index: ClusterIndex,
        similarity_top_k: int = 10,
        mode: Mode = "routed",
        n_probe: int | None = None,
        boundary_margin: float = 0.01,
        callback_manager: CallbackManager | None = None,
        verbose: bool = False,
        **kwargs: Any,
    ) -> None:
        if similarity_top_k < 1:
            raise ValueError(f"similarity_top_k must be >= 1, not {similarity_top_k}.")
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, not {mode!r}.")
        if n_probe is not None and not 1 <= n_probe:
            raise ValueError(f"n_probe must be a positive int or None (adaptive), not {n_probe!r}.")
        self.index = index
        self.similarity_top_k = similarity_top_k
        self.mode = mode
        self.n_probe = n_probe
        self.boundary_margin = boundary_margin
        self.last_stats: RetrievalStats | None = None
        super().__init__(callback_manager=callback_manager, verbose=verbose, **kwargs)

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        return self._search(self._query_vector(query_bundle))

    async def _aretrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        # Local embedders compute inside their "async" methods on the loop's thread, so the
        # embedding, like the scan, runs in a worker thread: the event loop never waits on it.
        return await asyncio.to_thread(self._retrieve, query_bundle)

    def _query_vector(self, query_bundle: QueryBundle) -> np.ndarray:
        if query_bundle.embedding is None:
            return embed_query(self.index.embed_model, _query_text(query_bundle))
        return unit_rows(np.asarray([query_bundle.embedding], dtype=np.float32))[0]

    def _search(self, vector: np.ndarray) -> list[NodeWithScore]:
        self.index.check_query_vector(vector)
        lists = self.index.lists
        clusters = route(vector, lists.centroids, lists.sizes, self.mode, self.n_probe, self.boundary_margin)
        hits, scanned = self.index.search(vector, clusters, self.similarity_top_k)
        probed = lists.n_clusters if clusters is None else len(clusters)
        self.last_stats = RetrievalStats(probed, scanned, scanned / max(len(lists), 1))
        return hits


def _query_text(query_bundle: QueryBundle) -> str:
    text = query_bundle.query_str
    if not text or not text.strip():
        raise EmptyQueryError("The query is empty: pass some text to retrieve for.")
    return text
