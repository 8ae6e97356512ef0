"""ClusterVectorStore: a LlamaIndex vector store that routes queries through the clusters of
a ``ClusterIndex`` on the app's own Chroma collection.

``VectorStoreIndex.from_vector_store(ClusterVectorStore.from_chroma(chroma_vector_store))``
gives the whole LlamaIndex surface (retrievers, query and chat engines, ``insert``,
``delete_ref_doc``, ingestion pipelines), sync and async. Writes go through to the
collection and update the clusters in the same call; the collection stays the one source
of truth (zero copy), and writes made to it by anyone else join on ``refresh()`` or by
themselves within ``max_staleness_s`` of a query.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from typing import Any

import numpy as np
from llama_index.core.base.embeddings.base import BaseEmbedding
from llama_index.core.bridge.pydantic import Field, PrivateAttr
from llama_index.core.indices.query.embedding_utils import get_top_k_mmr_embeddings
from llama_index.core.schema import BaseNode, NodeWithScore
from llama_index.core.vector_stores.types import (
    BasePydanticVectorStore,
    MetadataFilters,
    VectorStoreQuery,
    VectorStoreQueryMode,
    VectorStoreQueryResult,
)

from cluster_retriever.clustering import NClusters
from cluster_retriever.embeddings import unit_rows
from cluster_retriever.errors import IndexNotFoundError
from cluster_retriever.index import ClusterIndex
from cluster_retriever.store.clients import client_of, source_collection
from cluster_retriever.store.records import chroma_where, write_nodes
from cluster_retriever.types import DEFAULT_TARGET_RECALL, MODES, Mode, SearchParams, SearchResult, check_positive_int

SUPPORTED_MODES = (VectorStoreQueryMode.DEFAULT, VectorStoreQueryMode.MMR)
DEFAULT_MMR_PREFETCH_FACTOR = 4.0  # ChromaVectorStore's


class ClusterVectorStore(BasePydanticVectorStore):
    """A cluster-routed vector store over a Chroma collection.

    Example::

        import chromadb
        from llama_index.core import VectorStoreIndex
        from llama_index.vector_stores.chroma import ChromaVectorStore
        from cluster_retriever import ClusterVectorStore

        collection = chromadb.PersistentClient("./chroma").get_or_create_collection("docs")
        store = ClusterVectorStore.from_chroma(ChromaVectorStore(chroma_collection=collection), embed_model=embed_model)
        index = VectorStoreIndex.from_vector_store(store, embed_model=embed_model)
        index.insert(document)                       # written to the collection and to its cluster
        index.as_query_engine(filters=MetadataFilters(...)).query("...")
    """

    stores_text: bool = True
    flat_metadata: bool = True
    mode: Mode = Field(default="routed", description=f"One of {MODES}.")
    n_probe: int | None = Field(default=None, description="Clusters probed; None: the adaptive default.")
    boundary_margin: float = Field(default=0.01, description="Cosine margin for probing past a cluster boundary.")
    target_recall: float = Field(default=DEFAULT_TARGET_RECALL, gt=0, le=1, description="Share of exact search's top-k promised.")

    _index: ClusterIndex | None = PrivateAttr(default=None)
    _collection: Any = PrivateAttr(default=None)
    _adopt: dict[str, Any] = PrivateAttr(default_factory=dict)

    def __init__(self, index: ClusterIndex | None = None, **data: Any) -> None:
        """Wrap an open ``ClusterIndex``; ``from_chroma`` is the usual way in."""
        if index is not None and not isinstance(index, ClusterIndex):
            raise TypeError(
                f"ClusterVectorStore(...) takes an open ClusterIndex, not a {type(index).__name__}: wrap a "
                f"ChromaVectorStore or a chromadb collection with ClusterVectorStore.from_chroma(store, embed_model=...)."
            )
        super().__init__(**data)
        self._index = index
        self.search_params()  # validated once, here: SearchParams refuses what it cannot use

    @classmethod
    def from_chroma(
        cls,
        vector_store: Any,
        *,
        embed_model: str | BaseEmbedding | None = None,
        name: str | None = None,
        n_clusters: NClusters = "auto",
        random_state: int = 0,
        show_progress: bool = True,
        max_staleness_s: float | None = 1.0,
        search_params: SearchParams | None = None,
        **fields: Any,
    ) -> ClusterVectorStore:
        """Wrap a ``ChromaVectorStore`` (or a chromadb collection): open its cluster index if
        one exists (named ``<collection>-clusters`` unless ``name`` is given), else adopt the
        collection, zero copy. An empty collection gets its clusters on the first ``add``.
        ``search_params``: the index's defaults (``SearchParams``), under this store's fields."""
        collection = source_collection(vector_store)
        adopt: dict[str, Any] = {
            "client": client_of(collection),
            "name": name or _index_name(collection.name),
            "embed_model": embed_model,
            "n_clusters": n_clusters,
            "random_state": random_state,
            "show_progress": show_progress,
            "max_staleness_s": max_staleness_s,
            "search_params": search_params,
        }
        store = cls(None, **fields)
        store._collection, store._adopt = collection, adopt
        try:
            store._index = ClusterIndex.open(
                adopt["name"],
                client=adopt["client"],
                embed_model=embed_model,
                max_staleness_s=max_staleness_s,
                search_params=search_params,
            )
        except IndexNotFoundError:
            if collection.count() > 0:
                store._index = store._adopt_collection()
        return store

    def _adopt_collection(self) -> ClusterIndex:
        options = dict(self._adopt)
        index = ClusterIndex.from_vector_store(
            self._collection,
            **{
                k: options[k]
                for k in ("client", "name", "embed_model", "n_clusters", "random_state", "show_progress", "search_params")
            },
        )
        index.max_staleness_s = options["max_staleness_s"]
        return index

    @classmethod
    def class_name(cls) -> str:
        return "ClusterVectorStore"

    @property
    def index(self) -> ClusterIndex | None:
        """The cluster index (None until an empty collection gets its first nodes)."""
        return self._index

    @property
    def client(self) -> Any:
        return self._collection if self._index is None else self._index.store.client

    # -- writes ---------------------------------------------------------------------------
    def add(self, nodes: Sequence[BaseNode], **add_kwargs: Any) -> list[str]:
        """Write ``nodes`` (with their embeddings) to the collection and to their clusters.
        The first nodes of an empty collection are clustered as they come; the index
        re-clusters by itself each time it doubles (see ``ClusterIndex.add``)."""
        if not nodes:
            return []
        if self._index is None:
            write_nodes(self._collection, nodes)
            self._index = self._adopt_collection()
            return [node.node_id for node in nodes]
        return self._index.add(nodes, replace=True)  # an upsert, as ChromaVectorStore.add

    async def async_add(self, nodes: Sequence[BaseNode], **kwargs: Any) -> list[str]:
        return await asyncio.to_thread(self.add, nodes, **kwargs)

    def delete(self, ref_doc_id: str, **delete_kwargs: Any) -> None:
        if self._index is not None:
            self._index.delete_where({"document_id": ref_doc_id})

    async def adelete(self, ref_doc_id: str, **delete_kwargs: Any) -> None:
        await asyncio.to_thread(self.delete, ref_doc_id, **delete_kwargs)

    def delete_nodes(
        self, node_ids: list[str] | None = None, filters: MetadataFilters | None = None, **delete_kwargs: Any
    ) -> None:
        if self._index is None:
            return
        if filters is not None and filters.filters:
            matched = set(self._index.store.ids_where(self._index.manifest.data_collection, chroma_where(filters)))
            ids = [i for i in node_ids if i in matched] if node_ids else sorted(matched)
        else:
            ids = list(node_ids or [])
        if ids:
            self._index.delete(ids, missing_ok=True)

    async def adelete_nodes(
        self, node_ids: list[str] | None = None, filters: MetadataFilters | None = None, **delete_kwargs: Any
    ) -> None:
        await asyncio.to_thread(self.delete_nodes, node_ids, filters)

    def clear(self) -> None:
        if self._index is not None and len(self._index):
            self._index.delete(list(self._index.lists.ids), missing_ok=True)

    async def aclear(self) -> None:
        await asyncio.to_thread(self.clear)

    def get_nodes(
        self, node_ids: list[str] | None = None, filters: MetadataFilters | None = None, **kwargs: Any
    ) -> list[BaseNode]:
        return [] if self._index is None else self._index.get_nodes(node_ids, filters)

    # -- queries --------------------------------------------------------------------------
    def query(self, query: VectorStoreQuery, **kwargs: Any) -> VectorStoreQueryResult:
        """Routed (or flat/strict) exact search with ``query.filters``, ``node_ids`` and
        ``doc_ids`` applied inside the scan: never fewer than ``similarity_top_k`` hits when
        that many documents match. ``mode="mmr"`` reranks a prefetch of the nearest matches
        for diversity as ``ChromaVectorStore`` does (``mmr_threshold``, ``mmr_prefetch_factor``
        or ``mmr_prefetch_k`` in ``vector_store_kwargs``); other modes are refused."""
        if query.query_embedding is None:
            raise ValueError("ClusterVectorStore answers embedding queries: give query_embedding (VectorStoreIndex does).")
        if query.mode not in SUPPORTED_MODES:
            raise ValueError(
                f"ClusterVectorStore does not support vector_store_query_mode={query.mode.value!r}: use one of "
                f"{[m.value for m in SUPPORTED_MODES]} (dense search, or MMR for diversity)."
            )
        top_k = check_positive_int("similarity_top_k", query.similarity_top_k)
        assert top_k is not None
        if self._index is None:
            return _result([])
        vector = unit_rows(_as_matrix(query.query_embedding))[0]
        params = self.search_params(query)
        if query.mode == VectorStoreQueryMode.MMR:
            return self._mmr(vector, top_k, params, kwargs)
        return _result(self._search(vector, top_k, params).hits)

    def search_params(self, query: VectorStoreQuery | None = None) -> SearchParams:
        """This store's fields as ``SearchParams`` over the index's own (its exact-scan
        threshold and kernel), restricted by ``query``'s filters, node ids and doc ids: the
        one place a ``VectorStoreQuery`` becomes search parameters."""
        base = self._index.search_params if self._index is not None else SearchParams()
        settings = {"mode": self.mode, "n_probe": self.n_probe, "boundary_margin": self.boundary_margin}
        params = base.with_(**settings, target_recall=self.target_recall)
        return params if query is None else params.restricted(query.filters, query.node_ids, query.doc_ids)

    def _search(self, vector: np.ndarray, top_k: int, params: SearchParams, with_nodes: bool = True) -> SearchResult:
        assert self._index is not None
        return self._index.search(vector, top_k, params, with_nodes=with_nodes)

    def _mmr(self, vector: np.ndarray, top_k: int, params: SearchParams, options: dict[str, Any]) -> VectorStoreQueryResult:
        """``ChromaVectorStore``'s MMR over this index: the ``prefetch`` nearest matches (by the
        same routed, filtered search), reordered by ``get_top_k_mmr_embeddings``."""
        threshold = options.get("mmr_threshold")
        if threshold is not None and (
            isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0 <= threshold <= 1
        ):
            raise ValueError(f"mmr_threshold must be a float between 0 and 1, not {threshold!r}.")
        if options.get("mmr_prefetch_factor") is not None and options.get("mmr_prefetch_k") is not None:
            raise ValueError("'mmr_prefetch_factor' and 'mmr_prefetch_k' cannot coexist in a call to query(): give one.")
        if options.get("mmr_prefetch_k") is not None:
            prefetch = check_positive_int("mmr_prefetch_k", options["mmr_prefetch_k"]) or top_k
        else:
            prefetch = int(top_k * float(options.get("mmr_prefetch_factor") or DEFAULT_MMR_PREFETCH_FACTOR))
        prefetch = max(prefetch, top_k)
        candidates = self._search(vector, prefetch, params, with_nodes=False)
        assert self._index is not None
        lists = self._index.lists
        known = [doc_id for doc_id in candidates.ids if doc_id in lists]
        if not known:
            return _result([])
        _, chosen = get_top_k_mmr_embeddings(
            query_embedding=vector.tolist(),
            embeddings=lists.vectors_of(known).astype(np.float64).tolist(),
            similarity_top_k=top_k,
            embedding_ids=known,
            mmr_threshold=threshold,
        )
        # The chosen nodes, read (and their filter checked) by one restricted search.
        restriction = params.restriction
        chosen_only = params.restricted(restriction.filters, chosen, restriction.doc_ids)
        found = {hit.node.node_id: hit for hit in self._search(vector, len(chosen), chosen_only).hits}
        return _result([found[doc_id] for doc_id in chosen if doc_id in found])

    async def aquery(self, query: VectorStoreQuery, **kwargs: Any) -> VectorStoreQueryResult:
        return await asyncio.to_thread(self.query, query, **kwargs)

    def refresh(self, full: bool = False) -> bool:
        """Pick up writes made to the collection by other processes or clients now."""
        if self._index is None:
            if self._collection.count() == 0:
                return False
            self._index = self._adopt_collection()
            return True
        return self._index.refresh(full=full)


def _index_name(collection_name: str) -> str:
    """``<collection>-clusters``, with characters an index name cannot hold replaced."""
    return re.sub(r"[^A-Za-z0-9_-]", "-", collection_name)[:90].strip("-_") + "-clusters"


def _result(hits: list[NodeWithScore]) -> VectorStoreQueryResult:
    return VectorStoreQueryResult(
        nodes=[hit.node for hit in hits],
        similarities=[float(hit.score or 0.0) for hit in hits],
        ids=[hit.node.node_id for hit in hits],
    )


def _as_matrix(embedding: list[float]) -> np.ndarray:
    return np.asarray([embedding], dtype=np.float32)
