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
from llama_index.core.schema import BaseNode
from llama_index.core.vector_stores.types import (
    BasePydanticVectorStore,
    MetadataFilters,
    VectorStoreQuery,
    VectorStoreQueryResult,
)

from cluster_retriever.clustering import NClusters
from cluster_retriever.embeddings import unit_rows
from cluster_retriever.errors import IndexNotFoundError
from cluster_retriever.index import DEFAULT_TARGET_RECALL, ClusterIndex, check_positive_int
from cluster_retriever.routing import MODES, Mode
from cluster_retriever.store import chroma_where, client_of, source_collection, write_nodes


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
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, not {self.mode!r}.")
        check_positive_int("n_probe", self.n_probe, allow_none=True)
        self._index = index

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
        **fields: Any,
    ) -> ClusterVectorStore:
        """Wrap a ``ChromaVectorStore`` (or a chromadb collection): open its cluster index if
        one exists (named ``<collection>-clusters`` unless ``name`` is given), else adopt the
        collection, zero copy. An empty collection gets its clusters on the first ``add``."""
        collection = source_collection(vector_store)
        adopt: dict[str, Any] = {
            "client": client_of(collection),
            "name": name or _index_name(collection.name),
            "embed_model": embed_model,
            "n_clusters": n_clusters,
            "random_state": random_state,
            "show_progress": show_progress,
            "max_staleness_s": max_staleness_s,
        }
        store = cls(None, **fields)
        store._collection, store._adopt = collection, adopt
        try:
            store._index = ClusterIndex.open(
                adopt["name"], client=adopt["client"], embed_model=embed_model, max_staleness_s=max_staleness_s
            )
        except IndexNotFoundError:
            if collection.count() > 0:
                store._index = store._adopt_collection()
        return store

    def _adopt_collection(self) -> ClusterIndex:
        options = dict(self._adopt)
        index = ClusterIndex.from_vector_store(
            self._collection,
            **{k: options[k] for k in ("client", "name", "embed_model", "n_clusters", "random_state", "show_progress")},
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
        return self._index.add(nodes)

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
        that many documents match."""
        if query.query_embedding is None:
            raise ValueError("ClusterVectorStore answers embedding queries: give query_embedding (VectorStoreIndex does).")
        if self._index is None:
            return VectorStoreQueryResult(nodes=[], similarities=[], ids=[])
        vector = unit_rows(_as_matrix(query.query_embedding))[0]
        result = self._index.search(
            vector,
            query.similarity_top_k,
            self.mode,
            self.n_probe,
            self.boundary_margin,
            filters=query.filters,
            node_ids=query.node_ids,
            doc_ids=query.doc_ids,
            target_recall=self.target_recall,
        )
        return VectorStoreQueryResult(
            nodes=[hit.node for hit in result.hits],
            similarities=[float(hit.score or 0.0) for hit in result.hits],
            ids=[hit.node.node_id for hit in result.hits],
        )

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


def _as_matrix(embedding: list[float]) -> np.ndarray:
    return np.asarray([embedding], dtype=np.float32)
