"""ClusterIndex: build, open, grow and re-cluster a cluster-routed index on Chroma.

Data flows one way: documents -> embeddings (``ingest``) -> clusters -> store (``writer``),
and on open store -> inverted lists (``loading``), which queries route through (``search``).
This class is the public face; each job lives in the module named beside it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence, Sized
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from llama_index.core.base.embeddings.base import BaseEmbedding
from llama_index.core.schema import BaseNode
from llama_index.core.vector_stores.types import MetadataFilters
from tqdm.auto import tqdm

from cluster_retriever.calibration import calibration_queries
from cluster_retriever.clustering import NClusters, cluster_top_terms, resolve_n_clusters
from cluster_retriever.datasets import count_documents, iter_documents
from cluster_retriever.embeddings import resolve_embed_model
from cluster_retriever.errors import EmptyCorpusError
from cluster_retriever.index.ingest import check_collection_embedder, check_embedder, node_batches, page_batches
from cluster_retriever.index.loading import load_live
from cluster_retriever.index.repair import DEFAULT_NAME, repair
from cluster_retriever.index.search import check_query_vector, search_live
from cluster_retriever.index.snapshot import Snapshot
from cluster_retriever.index.state import LiveState
from cluster_retriever.index.writer import Writer
from cluster_retriever.scan.lists import InvertedLists
from cluster_retriever.store.chroma import ChromaStore, pages
from cluster_retriever.store.clients import ClientAPI, client_of, connect, source_collection
from cluster_retriever.store.lists_file import ListsFile, lists_file_for
from cluster_retriever.store.locking import WriterLock
from cluster_retriever.store.manifest import Manifest
from cluster_retriever.store.records import chroma_where, to_node
from cluster_retriever.types import SearchParams, SearchResult

if TYPE_CHECKING:
    from cluster_retriever.retriever import ClusterRetriever


class ClusterIndex:
    """A KMeans-partitioned (IVF) index of LlamaIndex nodes stored in Chroma.

    Example::

        from llama_index.core import Document
        from cluster_retriever import ClusterIndex

        docs = [Document(text="Product marketing managers own positioning and launches."),
                Document(text="Product managers own the roadmap and the backlog."),
                Document(text="Data engineers build pipelines.")]
        index = ClusterIndex.build(docs, path="./chroma", n_clusters=2)
        retriever = index.as_retriever(similarity_top_k=2)
        for hit in retriever.retrieve("who owns product launches?"):
            print(hit.score, hit.node.metadata["cluster_id"], hit.node.get_content())

        same = ClusterIndex.open(path="./chroma")   # later, in another process
    """

    def __init__(
        self,
        store: ChromaStore,
        manifest: Manifest,
        lists: InvertedLists,
        embed_model: BaseEmbedding,
        max_staleness_s: float | None = 1.0,
        lock_timeout_s: float = 10.0,
        recluster_growth: float | None = 2.0,
        lists_file: ListsFile | None | Literal["default"] = "default",
        search_params: SearchParams | None = None,
    ) -> None:
        self.store = store
        self.embed_model = embed_model
        self.recluster_growth = recluster_growth
        self._params = search_params or SearchParams()
        file = lists_file_for(store) if lists_file == "default" else lists_file
        self._live = LiveState(store, Snapshot(manifest, lists, None), file, max_staleness_s)
        self._writer = Writer(self._live, embed_model, lock_timeout_s)

    # -- constructors ---------------------------------------------------------------------
    @classmethod
    def build(
        cls,
        documents: Iterable[BaseNode] | str | Path,
        *,
        name: str = DEFAULT_NAME,
        path: str | Path | None = None,
        host: str | None = None,
        port: int = 8000,
        client: ClientAPI | None = None,
        embed_model: str | BaseEmbedding | None = None,
        n_clusters: NClusters = "auto",
        random_state: int = 0,
        batch_size: int = 256,
        show_progress: bool = True,
        search_params: SearchParams | None = None,
    ) -> ClusterIndex:
        """Embed, cluster and store ``documents`` (nodes, or a folder: BEIR layout or text files).
        Replaces an index of the same ``name`` only once the new one is complete.
        ``search_params``: the index's default ``SearchParams`` (as for ``open``)."""
        total: int | None = None
        if isinstance(documents, (str, Path)):
            total = count_documents(documents)  # also fails early on a missing folder
            documents = iter_documents(documents)
        elif isinstance(documents, Sized):
            total = len(documents)
        if total is not None:
            resolve_n_clusters(n_clusters, total)  # fail before any embedding work
        store = ChromaStore(connect(path, host, port, client), name)  # a bad path fails before the model loads
        embedder = resolve_embed_model(embed_model)
        batches = node_batches(documents, embedder, batch_size, total, show_progress)
        index = cls(store, _placeholder_manifest(), InvertedLists.empty(1), embedder, search_params=search_params)
        index._writer.fit(batches, n_clusters, random_state, show_progress, adopted=None)
        return index

    @classmethod
    def from_vector_store(
        cls,
        vector_store: Any,
        *,
        embed_model: str | BaseEmbedding | None = None,
        name: str = DEFAULT_NAME,
        client: ClientAPI | None = None,
        n_clusters: NClusters = "auto",
        random_state: int = 0,
        show_progress: bool = True,
        search_params: SearchParams | None = None,
    ) -> ClusterIndex:
        """Adopt an existing Chroma collection (a ``ChromaVectorStore``, a ``VectorStoreIndex``
        on one, or a chromadb collection), zero copy: its records stay the one source of truth,
        and the index stores only centroids, each record's cluster and a manifest beside it,
        through the collection's own client (``client`` puts them elsewhere). ``embed_model``
        must be the model that wrote it. The app's later writes join on ``refresh()`` (and
        within ``max_staleness_s`` of a query); ``add`` and ``delete`` write through."""
        source = source_collection(vector_store)
        if source.count() == 0:
            raise EmptyCorpusError(f"Chroma collection {source.name!r} is empty: nothing to cluster.")
        embedder = resolve_embed_model(embed_model)
        check_collection_embedder(source, embedder)
        store = ChromaStore(client or client_of(source), name)
        progress = tqdm(total=source.count(), unit="doc", desc="reading the collection", disable=not show_progress)
        batches = page_batches(pages(source.get, ["embeddings", "metadatas"]), progress)
        index = cls(store, _placeholder_manifest(), InvertedLists.empty(1), embedder, search_params=search_params)
        index._writer.fit(batches, n_clusters, random_state, show_progress, adopted=source.name)
        return index

    @classmethod
    def open(
        cls,
        name: str = DEFAULT_NAME,
        *,
        path: str | Path | None = None,
        host: str | None = None,
        port: int = 8000,
        client: ClientAPI | None = None,
        embed_model: str | BaseEmbedding | None = None,
        cache_records: bool = False,
        max_staleness_s: float | None = 1.0,
        lock_timeout_s: float = 10.0,
        lists_file: bool = True,
        lists_dtype: Literal["float32", "float16"] = "float32",
        search_params: SearchParams | None = None,
    ) -> ClusterIndex:
        """Open a stored index, checking it on the way; nothing is ever created on a path that
        holds no index. Without ``embed_model`` the manifest's model is loaded (another id or
        dimension is refused). A query looks for other writers' writes at most every
        ``max_staleness_s`` (``None``: only on ``refresh()``); a write waits up to
        ``lock_timeout_s`` for another process's lock (``store.locking``). ``search_params``:
        the index's default ``SearchParams``. The lists are memory-mapped from a local file
        beside the store (``lists_file=False``: read from Chroma each time; ``lists_dtype=
        "float16"`` halves it, docs/benchmarks.md); Chroma stays the truth (``store.lists_file``)."""
        store = ChromaStore(connect(path, host, port, client, must_exist=True), name)
        location, folder = store.location()
        WriterLock.for_index(location, name, folder).open_for_reading(lock_timeout_s)
        file = lists_file_for(store, lists_dtype) if lists_file else None
        manifest, lists = load_live(store, file)
        embedder = resolve_embed_model(manifest.embed_model if embed_model is None else embed_model)
        check_embedder(embedder, manifest)
        index = cls(
            store, manifest, lists, embedder, max_staleness_s, lock_timeout_s, lists_file=file, search_params=search_params
        )
        return index.cache_records() if cache_records else index

    # -- state ----------------------------------------------------------------------------
    @property
    def manifest(self) -> Manifest:
        return self._live.snapshot.manifest

    @property
    def lists(self) -> InvertedLists:
        return self._live.snapshot.lists

    @property
    def lists_file(self) -> ListsFile | None:
        return self._live.lists_file

    @property
    def search_params(self) -> SearchParams:
        """This index's default ``SearchParams`` (frozen; pass others per call)."""
        return self._params

    @property
    def max_staleness_s(self) -> float | None:
        return self._live.max_staleness_s

    @max_staleness_s.setter
    def max_staleness_s(self, value: float | None) -> None:
        self._live.max_staleness_s = value

    @property
    def lock_timeout_s(self) -> float:
        return self._writer.lock_timeout_s

    @lock_timeout_s.setter
    def lock_timeout_s(self, value: float) -> None:
        self._writer.lock_timeout_s = value

    def refresh(self, full: bool = False) -> bool:
        """Follow what other objects, processes or clients wrote since this one last looked;
        returns whether anything changed. A query's staleness check (every ``max_staleness_s``)
        follows every write made through the library and records the app added or deleted;
        ``refresh()`` also the app's in-place metadata changes (say a tenant change: it reads
        every record's metadata); ``full=True`` also in-place embedding changes. Whatever this
        handle has not seen yet, a filtered query never returns a record that does not match
        its filter in Chroma now (hits are checked on the records fetched)."""
        return self._live.sync(compare_metadata=True, full=full)

    def close(self) -> None:
        """Release this process's writer lock on an embedded store, so another process may write."""
        self._writer.lock.release()

    # -- writing --------------------------------------------------------------------------
    def add(self, documents: Iterable[BaseNode], show_progress: bool = False, replace: bool = False) -> list[str]:
        """Store new nodes, each in its nearest cluster (with their own embeddings when all carry
        one, else embedded), in ``ChromaVectorStore``'s format in the data collection. At
        ``recluster_growth`` times the records the clusters were fitted on (2x; None: never) it
        re-clusters in the same call. Idempotent: an id stored with the same text and metadata
        is a no-op, so an interrupted write can be run again; one with other content raises
        ``DuplicateIdError``, unless ``replace=True`` (an upsert, as ``ChromaVectorStore.add``)."""
        if isinstance(documents, (str, BaseNode)):
            raise TypeError("add takes a list of nodes or Documents, not a single one: wrap it in a list.")
        nodes = list(documents)
        if not nodes:
            raise EmptyCorpusError("Nothing to add: give at least one document.")
        result = self._writer.add(nodes, show_progress, replace)
        growth = self.recluster_growth
        if growth is not None and len(self) >= growth * max(self.manifest.clustered_count, 1) and len(self) >= 8:
            self.recluster()  # the clusters were fitted on too small a share of today's records
        return result

    def delete(self, ids: Sequence[str], missing_ok: bool = False) -> None:
        """Delete nodes by id. Unknown ids raise ``KeyError`` and nothing is deleted, unless
        ``missing_ok`` (use it to re-run a delete that was interrupted)."""
        if isinstance(ids, str):
            raise TypeError(f"delete takes a list of ids, not the string {ids[:40]!r}: pass [{ids[:40]!r}].")
        self._writer.delete(list(dict.fromkeys(ids)), missing_ok)

    def delete_where(self, where: dict[str, Any]) -> list[str]:
        """Delete every node whose metadata matches a Chroma ``where`` clause (for example
        ``{"document_id": ref_doc_id}``, as ``ChromaVectorStore.delete`` does); returns their ids.
        Records written to the data collection by others are found too."""
        return self._writer.delete_where(where)

    def recluster(self, n_clusters: NClusters = "auto", random_state: int | None = None, show_progress: bool = False) -> None:
        """Fit the clusters again over the stored vectors (after many adds or deletes).
        Queries keep running on the old clusters until the new ones are live."""
        self._writer.recluster(n_clusters, random_state, show_progress)

    def calibrate(self, queries: Sequence[str] | np.ndarray) -> None:
        """Calibrate the routing budget on a sample of real queries (texts, or their embeddings
        as rows), so ``target_recall`` holds for queries like them; by default the index is
        calibrated on its own documents. The query vectors are stored with the index (a
        ``<name>.g<N>.queries`` collection), and every ``recluster`` or rebuild with the same
        embedding model recalibrates on them for its new clusters; calibrating again replaces them."""
        vectors = calibration_queries(self.embed_model, queries)
        for vector in vectors:
            check_query_vector(self.manifest, vector)
        self._writer.calibrate(vectors)

    def cache_records(self) -> ClusterIndex:
        """Keep every node's text and metadata in memory too, so a query skips the Chroma
        round trip that fetches its winners (about as long as Chroma's whole query). Memory
        then grows with the corpus text; ``add``, ``delete`` and ``recluster`` keep it in step."""
        self._live.cache_records()
        return self

    def repair(self) -> dict[str, Any]:
        """Remove generations left by killed builds; returns what was done (see ``repair``)."""
        return repair(self.store.name, client=self.store.client, lock_timeout_s=self.lock_timeout_s)

    # -- reading --------------------------------------------------------------------------
    @property
    def n_clusters(self) -> int:
        return self.lists.n_clusters

    @property
    def cluster_sizes(self) -> np.ndarray:
        return self.lists.sizes

    @property
    def doc_count(self) -> int:
        """Nodes in the index (derived from what is stored, never counted separately)."""
        return len(self.lists)

    def __len__(self) -> int:
        return len(self.lists)

    def top_terms(self, n_terms: int = 5) -> list[list[str]]:
        """The most characteristic words of each cluster, so a person can see what it is about."""
        state = self._live.snapshot
        records = [r for r in self.store.iter_records(state.manifest.data_collection) if r[0] in state.lists]
        labels = np.asarray([state.lists.cluster_of(doc_id) for doc_id, _, _ in records], dtype=np.int64)
        return cluster_top_terms([text for _, text, _ in records], labels, self.n_clusters, n_terms)

    def as_retriever(self, **kwargs: Any) -> ClusterRetriever:
        """A ``ClusterRetriever`` over this index; keyword arguments go to its constructor."""
        from cluster_retriever.retriever import ClusterRetriever

        return ClusterRetriever(self, **kwargs)

    def search(
        self, query: np.ndarray, top_k: int, params: SearchParams | None = None, *, with_nodes: bool = True
    ) -> SearchResult:
        """The exact top-k of a unit query vector inside the clusters it routes to, cluster id
        in each hit's metadata; ``params`` (default: ``search_params``) says how. Its
        restriction applies inside the scan, probing further until ``top_k`` matches are
        covered. ``with_nodes=False``: ids and scores only, no document read."""
        params = self._params if params is None else params
        check_query_vector(self.manifest, query)
        return search_live(self._live, query, top_k, params, with_nodes)

    def get_nodes(self, node_ids: Sequence[str] | None = None, filters: MetadataFilters | None = None) -> list[BaseNode]:
        """Nodes by id and/or metadata filter, read from the data collection."""
        data = self.manifest.data_collection
        where = chroma_where(filters) if filters is not None and filters.filters else None
        lists = self.lists
        return [
            to_node(i, t, m, lists.cluster_of(i) if i in lists else -1)
            for i, t, m in self.store.get_records(data, node_ids, where)
        ]


def _placeholder_manifest() -> Manifest:
    return Manifest(embed_model="", dimension=1, n_clusters=1, generation=0, version=0, data_collection="", owns_data=False)
