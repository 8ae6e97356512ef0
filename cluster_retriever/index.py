"""ClusterIndex: build, open, grow and re-cluster a cluster-routed index on Chroma.

Data flows one way: documents -> embeddings -> clusters -> store, and on open
store -> in-memory inverted lists, which queries are routed through.

Concurrency contract (README, "Reliability"): writers are serialised (threads of a process
share a lock; one process at a time writes an embedded store; clients of a server commit
with a compare-and-swap and retry on the new state), every write that returned is stored,
and a query sees one consistent state: the one before or the one after a write.
"""

from __future__ import annotations

import itertools
import logging
import math
import numbers
import threading
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence, Sized
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from llama_index.core.base.embeddings.base import BaseEmbedding
from llama_index.core.schema import BaseNode, MetadataMode, NodeWithScore, TextNode
from llama_index.core.vector_stores.types import MetadataFilters
from llama_index.core.vector_stores.utils import metadata_dict_to_node
from tqdm.auto import tqdm

from cluster_retriever.calibration import budget_factor, calibrate
from cluster_retriever.clustering import NClusters, assign, cluster_top_terms, fit_clusters, resolve_n_clusters
from cluster_retriever.datasets import count_documents, iter_documents
from cluster_retriever.embeddings import embed_texts, embedding_model_id, resolve_embed_model, unit_rows
from cluster_retriever.errors import (
    ConcurrentWriteError,
    DuplicateIdError,
    EmbeddingMismatchError,
    EmptyCorpusError,
    IndexCorruptedError,
    InvalidEmbeddingError,
    InvalidQueryError,
    StaleIndexError,
    StoreOutOfSyncError,
)
from cluster_retriever.filters import MetadataColumns, filterable, restrict
from cluster_retriever.inverted_lists import InvertedLists
from cluster_retriever.lists_file import ListsFile, lists_file_for
from cluster_retriever.locking import WriterLock
from cluster_retriever.routing import Mode, route
from cluster_retriever.store import (
    CLUSTER_ID_KEY,
    ChromaStore,
    ClientAPI,
    GenerationGone,
    Manifest,
    chroma_where,
    client_of,
    make_client,
    node_record,
    pages,
    require_store_path,
    source_collection,
)

if TYPE_CHECKING:
    from cluster_retriever.retriever import ClusterRetriever

logger = logging.getLogger(__name__)

DEFAULT_NAME = "cluster_index"
DEFAULT_TARGET_RECALL = 0.95
EXACT_SCAN_MAX_FLOATS = 2_000_000
"""Adaptive routing scans everything that matches below this many floats (vectors x dimension):
measured here, an exact scan of 5,000 384-d vectors costs what routing does (0.28 ms each)."""
WRITE_RETRIES = 5
# What restricts a query: LlamaIndex filters, node ids, ref doc ids.
Restriction = tuple[MetadataFilters | None, Sequence[str] | None, Sequence[str] | None]
# Records of one generation as they are written: ids, unit vectors, texts, Chroma metadata.
Batch = tuple[list[str], np.ndarray, list[str], list[dict[str, Any]]]


@dataclass(frozen=True)
class SearchStats:
    """What one query cost: clusters probed, vectors scanned and the fraction of the corpus;
    ``exact``: everything that matches was scanned (a small index or filter, or ``flat``)."""

    clusters_probed: int
    vectors_scanned: int
    fraction_scanned: float
    exact: bool = False


@dataclass(frozen=True)
class SearchResult:
    """The hits of one query and what it cost; each call gets its own. ``ids`` and ``scores``
    are the scan's top-k (with ``with_nodes=False`` the only output: nothing is fetched)."""

    hits: list[NodeWithScore]
    stats: SearchStats
    ids: list[str] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)


@dataclass(frozen=True)
class _State:
    """Everything a query reads, swapped as one object so a query never mixes two versions."""

    manifest: Manifest
    lists: InvertedLists
    records: dict[str, tuple[str, dict[str, Any]]] | None


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
    ) -> None:
        self.store = store
        self.lists_file = lists_file_for(store) if lists_file == "default" else lists_file
        self.recluster_growth = recluster_growth
        self.exact_scan_max_floats = EXACT_SCAN_MAX_FLOATS
        # "faiss" (needs the [faiss] extra): FAISS's IVF-Flat kernel for routed scans; it holds a
        # copy of the vectors in memory, remade after each write, and measured no faster than
        # numpy's at 100k-300k (docs/benchmarks.md), hence opt-in.
        self.scan_kernel: Literal["numpy", "faiss"] = "numpy"
        self.embed_model = embed_model
        self.max_staleness_s = max_staleness_s
        self.lock_timeout_s = lock_timeout_s
        location, folder = store.location()
        self._lock = WriterLock.for_index(location, store.name, folder)
        self._state = _State(manifest, lists, None)
        self._checked_at = time.monotonic()
        self._unreadable: tuple[int, int] | None = None  # (version, count) a refresh could not read
        self._warned_unreadable = False
        self._readers: Counter[int] = Counter()
        self._retired: set[int] = set()
        self._readers_lock = threading.Lock()

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
    ) -> ClusterIndex:
        """Embed, cluster and store ``documents`` (nodes, or a folder: BEIR layout or text files).

        Replaces an index of the same ``name`` only once the new one is complete.
        """
        total: int | None = None
        if isinstance(documents, (str, Path)):
            total = count_documents(documents)  # also fails early on a missing folder
            documents = iter_documents(documents)
        elif isinstance(documents, Sized):
            total = len(documents)
        if total is not None:
            resolve_n_clusters(n_clusters, total)  # fail before any embedding work
        store = ChromaStore(client or make_client(path, host, port), name)  # a bad path fails before the model loads
        embedder = resolve_embed_model(embed_model)
        source = documents

        def batches() -> Iterator[Batch]:
            seen: set[str] = set()
            any_text = False
            progress = tqdm(total=total, unit="doc", desc="embedding", disable=not show_progress)
            for chunk in _chunks(source, batch_size):
                ids = [node.node_id for node in chunk]
                _check_new_ids(ids, seen)
                seen.update(ids)
                records = [node_record(node) for node in chunk]
                texts = [text for _, text, _ in records]
                any_text = any_text or any(text.strip() for text in texts)
                vectors = embed_texts(embedder, [node.get_content(metadata_mode=MetadataMode.EMBED) for node in chunk])
                yield ids, vectors, texts, [metadata for _, _, metadata in records]
                progress.update(len(chunk))
            progress.close()
            if seen and not any_text:
                raise EmptyCorpusError(f"All {len(seen)} documents are empty: give at least one document with text.")

        index = cls(store, _placeholder_manifest(), InvertedLists.empty(1), embedder)
        with index._lock.hold(index.lock_timeout_s):
            index._rebuild(batches(), n_clusters, random_state, show_progress, store.read_manifest(), None, True)
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
    ) -> ClusterIndex:
        """Adopt an existing Chroma collection, zero copy: its documents and embeddings stay
        where they are, the one source of truth, and the index stores only what the clusters
        add (centroids, each record's cluster, a manifest) beside it in the same database.

        ``vector_store`` is a LlamaIndex ``ChromaVectorStore`` (or a ``VectorStoreIndex`` on
        one) or a ``chromadb`` collection; ``embed_model`` must be the model that wrote it.
        Records the app writes to the collection later join the index on ``refresh()`` (and
        on their own within ``max_staleness_s`` of a query); ``add`` and ``delete`` on the
        index write through to the collection. The index lives beside the collection, through
        the collection's own client (its settings, tenant and database; persistent, HTTP or
        in-memory); ``client`` puts it elsewhere.
        """
        source = source_collection(vector_store)
        if source.count() == 0:
            raise EmptyCorpusError(f"Chroma collection {source.name!r} is empty: nothing to cluster.")
        embedder = resolve_embed_model(embed_model)
        stored_dim = len(source.get(limit=1, include=["embeddings"])["embeddings"][0])
        query_dim = _embedding_dim(embedder)
        if stored_dim != query_dim:
            raise EmbeddingMismatchError(
                f"Collection {source.name!r} holds {stored_dim}-d vectors but {embedding_model_id(embedder)!r} gives "
                f"{query_dim}-d: pass the embed_model that wrote the collection."
            )
        store = ChromaStore(client or client_of(source), name)
        index = cls(store, _placeholder_manifest(), InvertedLists.empty(1), embedder)
        progress = tqdm(total=source.count(), unit="doc", desc="reading the collection", disable=not show_progress)
        batches = _page_batches(pages(source, ["embeddings", "metadatas"]), progress)
        with index._lock.hold(index.lock_timeout_s):
            index._rebuild(batches, n_clusters, random_state, show_progress, store.read_manifest(), source.name, False)
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
    ) -> ClusterIndex:
        """Open a stored index, checking it on the way (manifest, collections, centroids,
        cluster ids). Nothing is ever created on a path that holds no index.

        Without ``embed_model`` the model named in the manifest is loaded; a model whose id or
        dimension differs from the manifest is refused. ``cache_records=True`` calls
        ``cache_records()``. A query looks for writes by other processes or clients at most
        every ``max_staleness_s`` seconds (``None``: only on ``refresh()``). A write waits up to
        ``lock_timeout_s`` for another process's lock on an embedded store (see ``locking``:
        many reader processes, or one writer process).

        The inverted lists are memory-mapped from a local file kept next to the store
        (``lists_file=False``: read from Chroma into memory each time); ``lists_dtype="float16"``
        halves that file and the memory the scanned clusters take (see docs/benchmarks.md for
        its recall cost). Chroma stays the truth: see ``cluster_retriever.lists_file``.
        """
        if client is None and host is None:
            require_store_path(path)
        store = ChromaStore(client or make_client(path, host, port), name)
        location, folder = store.location()
        WriterLock.for_index(location, name, folder).open_for_reading(lock_timeout_s)
        file = lists_file_for(store, lists_dtype) if lists_file else None
        manifest, lists = _load_live(store, file)
        embedder = resolve_embed_model(manifest.embed_model if embed_model is None else embed_model)
        _check_embedder(embedder, manifest)
        index = cls(store, manifest, lists, embedder, max_staleness_s, lock_timeout_s, lists_file=file)
        return index.cache_records() if cache_records else index

    # -- state ----------------------------------------------------------------------------
    @property
    def manifest(self) -> Manifest:
        return self._state.manifest

    @property
    def lists(self) -> InvertedLists:
        return self._state.lists

    def refresh(self, full: bool = False) -> bool:
        """Follow what other objects, processes or clients wrote since this one last looked;
        returns whether anything changed. What each level catches:

        - the staleness check of a query (every ``max_staleness_s``, when the manifest version
          or the record count moved): every write made through the library by any handle,
          process or client (adds, deletes, re-adds of an id with new text or metadata), and
          records the app added to or deleted from the collection itself;
        - ``refresh()``: also the app's own in-place changes of metadata (an upsert of an
          existing id, say a tenant change): it reads every record's metadata;
        - ``refresh(full=True)``: also in-place changes of embeddings: it re-reads every vector.

        Whatever this handle has not seen yet, a filtered query never returns a record that
        does not match its filter in Chroma now (hits are checked on the records fetched)."""
        return self._sync(compare_metadata=True, full=full)

    def _sync(self, compare_metadata: bool, full: bool = False) -> bool:
        self._checked_at = time.monotonic()
        manifest = self.store.require_manifest()
        state = self._state
        if full or manifest.generation != state.manifest.generation or manifest.data_collection != state.manifest.data_collection:
            lists = _load_lists(self.store, manifest, self.lists_file, use_file=not full)
        else:
            lists = _reconcile(self.store, manifest, state.lists, state.manifest.version, compare_metadata)
            if lists is state.lists and manifest.version == state.manifest.version:
                self._unreadable = None
                return False
        self._unreadable = None
        records = self._read_records(manifest) if state.records is not None else None
        self._switch(_State(manifest, lists, records))
        return True

    def _refresh_if_moved(self, retry_unreadable: bool = True) -> None:
        """The cheap check: one manifest read and one count; ``refresh()`` only when either
        moved (a balanced add and delete made outside the library waits for ``refresh()``).
        ``retry_unreadable=False`` skips a refresh that already failed on this very state (see
        ``_maybe_refresh``)."""
        self._checked_at = time.monotonic()
        state = self._state
        manifest = self.store.read_manifest()
        if manifest is None:
            self._sync(compare_metadata=False)
            return
        seen = (manifest.version, self.store.count(manifest.data_collection))
        if seen == (state.manifest.version, len(state.lists)) or (not retry_unreadable and seen == self._unreadable):
            return
        try:
            self._sync(compare_metadata=False)
        except StoreOutOfSyncError:
            self._unreadable = seen
            raise

    def _switch(self, state: _State) -> None:
        """Make ``state`` live; the previous generation is dropped once no query here reads it."""
        old = self._state.manifest
        self._state = state
        if state.manifest.generation != old.generation and old.generation > 0:
            self._retire(old.generation)

    def _retire(self, generation: int) -> None:
        with self._readers_lock:
            if self._readers[generation] > 0:
                self._retired.add(generation)
                return
        self.store.drop_generation(generation, keep=self._state.manifest.data_collection)

    def _maybe_refresh(self) -> None:
        """The staleness check of a query. When another process wrote an embedded folder, the
        query keeps answering from the last state it could read (one WARNING says why and what
        to do), and the check retries only once the store moves again; writes and
        ``refresh()`` raise ``StoreOutOfSyncError`` instead."""
        if self.max_staleness_s is None or time.monotonic() - self._checked_at < self.max_staleness_s:
            return
        try:
            self._refresh_if_moved(retry_unreadable=False)
        except StoreOutOfSyncError as exc:
            if not self._warned_unreadable:
                logger.warning("index %r answers from its last readable state: %s", self.store.name, exc)
                self._warned_unreadable = True

    def close(self) -> None:
        """Release this process's writer lock on an embedded store, so another process may write."""
        self._lock.release()

    # -- writing --------------------------------------------------------------------------
    def _rebuild(
        self,
        batches: Iterable[Batch],
        n_clusters: NClusters,
        random_state: int,
        show_progress: bool,
        expected: Manifest | None,
        data: str | None,
        write_data: bool,
    ) -> None:
        """Cluster the records of ``batches`` (writing them to ``data`` first when
        ``write_data``), write a new generation of centroids and assignments, commit a
        manifest naming it, then switch to it. Call with the writer lock held; ``expected`` is
        the manifest the batches were read under; ``data`` None names a new data collection
        after the generation."""
        store = self.store
        generation = store.claim_generation()
        data = data or store.nodes_name(generation)  # a build from documents: its data is new too
        created = [data] if write_data else []
        try:
            all_ids: list[str] = []
            all_vectors: list[np.ndarray] = []
            all_metadatas: list[dict[str, Any]] = []
            for ids, vectors, texts, metadatas in batches:
                if write_data:
                    store.add_records(data, ids, vectors, texts, metadatas, create=True)
                all_ids.extend(ids)
                all_vectors.append(vectors)
                all_metadatas.extend(filterable(m) for m in metadatas)
            if not all_ids:
                raise EmptyCorpusError("The corpus is empty: give at least one document with text.")
            matrix = np.concatenate(all_vectors)
            if show_progress:
                logger.info("clustering %d vectors", len(matrix))
            clustering = fit_clusters(matrix, n_clusters, random_state)
            lists = InvertedLists(clustering.centroids, all_ids, matrix, clustering.labels, all_metadatas)
            version = expected.version + 1 if expected is not None else 1
            store.write_assignments(generation, all_ids, clustering.labels, version, create=True)
            store.write_centroids(generation, clustering.centroids)
            fields = {
                "embed_model": embedding_model_id(self.embed_model),
                "dimension": matrix.shape[1],
                "n_clusters": len(clustering.centroids),
                "generation": generation,
                "random_state": random_state,
                "data_collection": data,
                "clustered_count": len(all_ids),
                "calibration": calibrate(lists, random_state),
                "outlier_fence": lists.fence if math.isfinite(lists.fence) else None,
                "owns_data": write_data or (expected is not None and expected.owns_data and expected.data_collection == data),
            }
            manifest = (
                expected.bumped(**fields) if expected is not None else Manifest.model_validate({"version": version, **fields})
            )
            store.commit_manifest(manifest)
        except BaseException:
            store.drop_generation(generation, keep=None if created else data)
            raise
        previous = self._state
        records = self._read_records(manifest) if previous.records is not None else None
        self._state = _State(manifest, lists, records)
        if self.lists_file is not None:
            self.lists_file.save(lists, generation, manifest.version, store.data_uuid(data))
        self._checked_at = time.monotonic()
        if expected is not None and expected.owns_data and expected.data_collection != data:
            self.store.drop_data(expected.data_collection)  # a rebuild from documents replaced it
        # Generations of killed builds, and the one just replaced (once no query here reads it).
        # On a server, other clients may still be reading the one just replaced, and no lock
        # tells: it stays until the next rebuild, a whole re-clustering of grace.
        on_server = store.location()[1] is None
        for orphan in store.orphans(manifest):
            if not (on_server and expected is not None and orphan == expected.generation):
                self._retire(orphan)

    def _write(self, operation: str, apply: Any) -> Any:
        """Run ``apply(state)`` under the writer lock on the newest state, retrying when another
        client committed first or re-clustered under it."""
        with self._lock.hold(self.lock_timeout_s):
            for _ in range(WRITE_RETRIES):
                self._refresh_if_moved()  # a stale handle must never write on an old state
                try:
                    return apply(self._state)
                except (ConcurrentWriteError, GenerationGone) as exc:
                    logger.info("%s raced another writer (%s); retrying on the new state", operation, exc)
            raise ConcurrentWriteError(
                f"{operation} lost {WRITE_RETRIES} races in a row to other writers of index {self.store.name!r}; "
                f"nothing was lost, but this call did not complete: retry it later."
            )

    def add(self, documents: Iterable[BaseNode], show_progress: bool = False, replace: bool = False) -> list[str]:
        """Store new nodes, each in its nearest cluster. Once the index holds
        ``recluster_growth`` times the records its clusters were fitted on (2x by default;
        None: never), it re-clusters by itself in the same call. Nodes that carry
        an embedding (as ``VectorStoreIndex`` gives them) are stored with it; the others are
        embedded with the index's model. Writes go to the data collection too, in
        ``ChromaVectorStore``'s format, so an adopted collection stays the app's truth.

        Idempotent: re-adding an id stored with the same text and metadata is a no-op, so a
        write that was interrupted can simply be run again. An id stored with other text or
        metadata raises ``DuplicateIdError``, unless ``replace=True`` (an upsert, as
        ``ChromaVectorStore.add`` does): then its record, vector, cluster and filter columns
        are replaced, here and, within ``max_staleness_s``, in every other handle."""
        if isinstance(documents, (str, BaseNode)):
            raise TypeError("add takes a list of nodes or Documents, not a single one: wrap it in a list.")
        nodes = list(documents)
        if not nodes:
            raise EmptyCorpusError("Nothing to add: give at least one document.")
        ids = [node.node_id for node in nodes]
        _check_new_ids(ids, set())
        records = [node_record(node) for node in nodes]
        texts = [text for _, text, _ in records]
        metadatas = [metadata for _, _, metadata in records]
        if all(node.embedding is not None for node in nodes):
            raw = np.asarray([node.embedding for node in nodes], dtype=np.float32)
            vectors = unit_rows(raw)
        else:
            embed_inputs = [n.get_content(metadata_mode=MetadataMode.EMBED) for n in nodes]
            raw = vectors = embed_texts(self.embed_model, embed_inputs, show_progress)
        _check_embeddings(ids, raw)

        def apply(state: _State) -> list[str]:
            self.check_query_vector(vectors[0])  # the dimension of the index
            new, replaced = self._new_rows(state, ids, texts, metadatas, replace)
            if not new:
                return ids
            labels = assign(vectors[new], state.lists.centroids)
            new_ids = [ids[i] for i in new]
            new_texts = [texts[i] for i in new]
            new_metadatas = [metadatas[i] for i in new]
            self.store.add_records(state.manifest.data_collection, new_ids, raw[new], new_texts, new_metadatas)
            manifest = state.manifest.bumped()
            self.store.write_assignments(state.manifest.generation, new_ids, labels, manifest.version)
            self.store.commit_manifest(manifest)
            records = state.records
            if records is not None:
                records = {**records, **dict(zip(new_ids, zip(new_texts, new_metadatas, strict=True), strict=True))}
            kept = state.lists.removed(replaced) if replaced else state.lists
            lists = kept.added(new_ids, vectors[new], labels, [filterable(m) for m in new_metadatas])
            self._state = _State(manifest, lists, records)
            return ids

        result: list[str] = self._write("add", apply)
        growth = self.recluster_growth
        if growth is not None and len(self) >= growth * max(self.manifest.clustered_count, 1) and len(self) >= 8:
            self.recluster()  # the clusters were fitted on too small a share of today's records
        return result

    def _new_rows(
        self, state: _State, ids: list[str], texts: list[str], metadatas: list[dict[str, Any]], replace: bool
    ) -> tuple[list[int], list[str]]:
        """Rows to write, and the stored ids among them that they replace: a stored id with
        the same text and metadata is already done; one with other content is replaced, or a
        ``DuplicateIdError`` without ``replace``."""
        stored = [i for i, doc_id in enumerate(ids) if doc_id in state.lists]
        found = self.store.fetch(state.manifest.data_collection, [ids[i] for i in stored]) if stored else {}
        same = {i for i in stored if ids[i] in found and found[ids[i]] == (texts[i], metadatas[i])}
        clashes = [i for i in stored if i not in same]
        if clashes and not replace:
            raise DuplicateIdError(
                f"{len(clashes)} id(s) are already in the index with other text or metadata (e.g. "
                f"{[ids[i] for i in clashes[:3]]}); delete them first, give new ids, or add(..., replace=True)."
            )
        return [i for i in range(len(ids)) if i not in same], [ids[i] for i in clashes]

    def delete(self, ids: Sequence[str], missing_ok: bool = False) -> None:
        """Delete nodes by id. Unknown ids raise ``KeyError`` and nothing is deleted, unless
        ``missing_ok`` (use it to re-run a delete that was interrupted)."""
        if isinstance(ids, str):
            raise TypeError(f"delete takes a list of ids, not the string {ids[:40]!r}: pass [{ids[:40]!r}].")
        ids = list(dict.fromkeys(ids))

        def apply(state: _State) -> None:
            missing = [doc_id for doc_id in ids if doc_id not in state.lists]
            if missing and not missing_ok:
                raise KeyError(f"{len(missing)} id(s) are not in the index (e.g. {missing[:3]}); nothing was deleted.")
            present = [doc_id for doc_id in ids if doc_id in state.lists]
            if not present:
                return
            self.store.delete_records(state.manifest.data_collection, present)
            self.store.delete_assignments(state.manifest.generation, present)
            manifest = state.manifest.bumped()
            self.store.commit_manifest(manifest)
            records = state.records
            if records is not None:
                records = {k: v for k, v in records.items() if k not in set(present)}
            self._state = _State(manifest, state.lists.removed(present), records)

        self._write("delete", apply)

    def delete_where(self, where: dict[str, Any]) -> list[str]:
        """Delete every node whose metadata matches a Chroma ``where`` clause (for example
        ``{"document_id": ref_doc_id}``, as ``ChromaVectorStore.delete`` does); returns their ids.
        Records written to the data collection by others are found too."""
        ids = self.store.ids_where(self._state.manifest.data_collection, where)
        if ids:
            self.delete(ids, missing_ok=True)
            leftover = set(ids) - set(self.lists.ids)
            if leftover:  # written by another client and not refreshed in yet: delete from the data too
                self.store.delete_records(self._state.manifest.data_collection, sorted(leftover))
        return ids

    def recluster(self, n_clusters: NClusters = "auto", random_state: int | None = None, show_progress: bool = False) -> None:
        """Fit the clusters again over the stored vectors (after many adds or deletes).
        Queries keep running on the old clusters until the new ones are live."""

        def apply(state: _State) -> None:
            data = state.manifest.data_collection
            seed = state.manifest.random_state if random_state is None else random_state
            batches = _page_batches(self.store.iter_data(data, ["embeddings", "metadatas"]))
            self._rebuild(batches, n_clusters, seed, show_progress, state.manifest, data, False)

        self._write("recluster", apply)

    def cache_records(self) -> ClusterIndex:
        """Keep every node's text and metadata in memory too, so a query skips the Chroma
        round trip that fetches its winners (about as long as Chroma's whole query). Memory
        then grows with the corpus text; ``add``, ``delete`` and ``recluster`` keep it in step."""
        state = self._state
        self._state = _State(state.manifest, state.lists, self._read_records(state.manifest))
        return self

    def _read_records(self, manifest: Manifest) -> dict[str, tuple[str, dict[str, Any]]]:
        return {doc_id: (text, metadata) for doc_id, text, metadata in self.store.iter_records(manifest.data_collection)}

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
        state = self._state
        records = [r for r in self.store.iter_records(state.manifest.data_collection) if r[0] in state.lists]
        texts = [text for _, text, _ in records]
        labels = np.asarray([state.lists.cluster_of(doc_id) for doc_id, _, _ in records], dtype=np.int64)
        return cluster_top_terms(texts, labels, self.n_clusters, n_terms)

    def as_retriever(self, **kwargs: Any) -> ClusterRetriever:
        """A ``ClusterRetriever`` over this index; keyword arguments go to its constructor."""
        from cluster_retriever.retriever import ClusterRetriever

        return ClusterRetriever(self, **kwargs)

    def search(
        self,
        query: np.ndarray,
        top_k: int,
        mode: Mode = "routed",
        n_probe: int | None = None,
        boundary_margin: float = 0.01,
        filters: MetadataFilters | None = None,
        node_ids: Sequence[str] | None = None,
        doc_ids: Sequence[str] | None = None,
        target_recall: float = DEFAULT_TARGET_RECALL,
        with_nodes: bool = True,
    ) -> SearchResult:
        """Route a unit query vector and return its exact top-k inside the probed clusters,
        with the cluster id in each hit's metadata. ``filters`` (LlamaIndex
        ``MetadataFilters``, Chroma's semantics), ``node_ids`` and ``doc_ids`` restrict the
        scan itself: routing counts only matching documents and probes further clusters until
        ``top_k`` of them are covered, so fewer than ``top_k`` hits come back only when fewer
        match in the whole index.

        Adaptive routing (``mode="routed"``, ``n_probe=None``) scans as many documents as
        this index's calibration says reach ``target_recall`` of exact search's top-k, and
        scans everything that matches when that is cheap anyway (``exact_scan_max_floats``).
        ``with_nodes=False`` returns ids and scores only, without reading the documents."""
        if not 0.0 < target_recall <= 1.0:
            raise ValueError(f"target_recall must be in (0, 1], not {target_recall!r}.")
        self.check_query_vector(query)
        self._maybe_refresh()
        for attempt in range(2):
            state = self._state
            generation = state.manifest.generation
            with self._readers_lock:
                self._readers[generation] += 1
            try:
                restriction = (filters, node_ids, doc_ids)
                return self._search_state(
                    state, query, top_k, mode, n_probe, boundary_margin, restriction, target_recall, with_nodes
                )
            except GenerationGone:
                if attempt:
                    break
                self.refresh()  # another process re-clustered: follow it
            finally:
                self._release_reader(generation)
        raise StaleIndexError(
            f"Index {self.store.name!r} was rebuilt by another writer while this query ran, twice: "
            f"reopen it with ClusterIndex.open(...)."
        )

    def get_nodes(self, node_ids: Sequence[str] | None = None, filters: MetadataFilters | None = None) -> list[BaseNode]:
        """Nodes by id and/or metadata filter, read from the data collection."""
        data = self._state.manifest.data_collection
        where = chroma_where(filters) if filters is not None and filters.filters else None
        found = self.store.get_records(data, node_ids, where)
        lists = self.lists
        return [_to_node(i, t, m, lists.cluster_of(i) if i in lists else -1) for i, t, m in found]

    def _release_reader(self, generation: int) -> None:
        with self._readers_lock:
            self._readers[generation] -= 1
            drop = self._readers[generation] == 0 and generation in self._retired
            if drop:
                self._retired.discard(generation)
        if drop:
            self.store.drop_generation(generation, keep=self._state.manifest.data_collection)

    def _search_state(
        self,
        state: _State,
        query: np.ndarray,
        top_k: int,
        mode: Mode,
        n_probe: int | None,
        boundary_margin: float,
        restriction: Restriction,
        target_recall: float,
        with_nodes: bool = True,
    ) -> SearchResult:
        lists = state.lists
        if len(lists) == 0:
            return SearchResult([], SearchStats(0, 0, 0.0, True))
        mask = lists.mask(*restriction)
        sizes = lists.sizes_within(mask)
        adaptive = mode == "routed" and n_probe is None
        factor = budget_factor(state.manifest.calibration, top_k, target_recall) if adaptive else None
        similarity = None if mode == "flat" else lists.centroids @ query
        if adaptive and (int(sizes.sum()) * lists.dim <= self.exact_scan_max_floats or (factor is None and target_recall >= 1.0)):
            clusters = None  # scanning every match costs no more than routing would
        elif adaptive and similarity is not None and float(np.max(similarity)) < lists.fence:
            clusters = None  # far from every cluster (an off-topic query): routing cannot be trusted, scan exactly
        else:
            clusters = route(query, lists.centroids, sizes, mode, n_probe, boundary_margin, top_k, factor, similarity=similarity)
        restricted = mask is not None
        want = top_k
        while True:
            result = lists.scan(query, clusters, want, mask, self.scan_kernel, spill=mode == "routed")
            ids, scores = result.ids, [float(score) for score in result.scores]
            records = self._fetch(state, ids, with_nodes, restricted)
            if records is not None:  # drop records deleted meanwhile, and any the filter no longer admits
                kept = [i for i, doc_id in enumerate(ids) if doc_id in records]
                if restricted and kept:
                    fresh = restrict(
                        MetadataColumns([filterable(records[ids[i]][1]) for i in kept]),
                        np.asarray([ids[i] for i in kept], dtype=object),
                        *restriction,
                    )
                    kept = [i for i, ok in zip(kept, fresh.tolist(), strict=True) if ok]
                ids, scores = [ids[i] for i in kept], [scores[i] for i in kept]
            if len(ids) >= top_k or want >= result.n_scanned:
                break
            want = min(result.n_scanned, 2 * want)  # top up from further candidates
        ids, scores = ids[:top_k], scores[:top_k]
        nonempty = int(np.count_nonzero(sizes))
        probed = nonempty if clusters is None else len(clusters)
        exact = clusters is None or len(clusters) == nonempty
        stats = SearchStats(probed, result.n_scanned, result.n_scanned / len(lists), bool(exact))
        if not with_nodes or records is None:
            return SearchResult([], stats, ids, scores)
        hits = [
            NodeWithScore(node=_to_node(doc_id, *records[doc_id], cluster_id=lists.cluster_of(doc_id)), score=score)
            for doc_id, score in zip(ids, scores, strict=True)
        ]
        return SearchResult(hits, stats, ids, scores)

    def _fetch(
        self, state: _State, ids: list[str], with_nodes: bool, restricted: bool
    ) -> dict[str, tuple[str, dict[str, Any]]] | None:
        """The records of the scan's hits, in one read: documents and metadata for nodes, the
        metadata alone for a filtered ids-only query (its filter is checked on what Chroma
        holds now), nothing for an unfiltered ids-only query (None)."""
        if not (with_nodes or restricted):
            return None
        if not ids:
            return {}
        data = state.manifest.data_collection
        if state.records is not None and not restricted:
            return {doc_id: state.records[doc_id] for doc_id in ids if doc_id in state.records}
        found = self.store.fetch(data, ids, documents=with_nodes and state.records is None)
        if state.records is not None:  # texts from the cache, metadata fresh from Chroma
            found = {doc_id: (state.records[doc_id][0], meta) for doc_id, (_, meta) in found.items() if doc_id in state.records}
        return found

    def check_query_vector(self, vector: np.ndarray) -> None:
        if vector.shape != (self.manifest.dimension,):
            raise EmbeddingMismatchError(
                f"Query embedding has shape {vector.shape}, the index stores {self.manifest.dimension}-d vectors "
                f"from {self.manifest.embed_model!r}: embed queries with that model."
            )
        if not np.all(np.isfinite(vector)) or not np.any(vector):
            raise InvalidQueryError(
                "The query embedding has NaN, infinite or only zero values: check the embedding model's output."
            )


def repair(
    name: str = DEFAULT_NAME,
    *,
    path: str | Path | None = None,
    host: str | None = None,
    port: int = 8000,
    client: ClientAPI | None = None,
    lock_timeout_s: float = 10.0,
) -> dict[str, Any]:
    """Drop the generations that killed builds or re-clusters left behind (no embedding model
    needed), holding the writer lock; returns the live generation and what was dropped.
    Damage that cannot be repaired (a missing or broken manifest or live collection) raises
    ``IndexCorruptedError``, which says to rebuild."""
    if client is None and host is None:
        require_store_path(path)
    store = ChromaStore(client or make_client(path, host, port), name)
    location, folder = store.location()
    with WriterLock.for_index(location, name, folder).hold(lock_timeout_s):
        manifest = store.require_manifest()
        store.check_generation(manifest)
        orphans = store.orphans(manifest)
        for orphan in orphans:
            store.drop_generation(orphan, keep=manifest.data_collection)
        lists_file = lists_file_for(store)
        if lists_file is not None:
            lists_file.prune(manifest.generation)  # files of dropped generations
    return {"generation": manifest.generation, "orphan_generations_dropped": orphans}


def _placeholder_manifest() -> Manifest:
    return Manifest(embed_model="", dimension=1, n_clusters=1, generation=0, version=0, data_collection="", owns_data=False)


def _load_live(store: ChromaStore, lists_file: ListsFile | None, attempts: int = 5) -> tuple[Manifest, InvertedLists]:
    """The newest manifest and its lists. A generation that vanishes while it is read was
    replaced by another client's commit (the manifest moved): read the new one instead."""
    for attempt in range(attempts):
        manifest = store.require_manifest()
        try:
            return manifest, _load_lists(store, manifest, lists_file)
        except (IndexCorruptedError, StaleIndexError):
            if attempt == attempts - 1 or store.require_manifest().version == manifest.version:
                raise
    raise AssertionError("unreachable")


def _load_lists(store: ChromaStore, manifest: Manifest, lists_file: ListsFile | None, use_file: bool = True) -> InvertedLists:
    """The inverted lists of the live generation: from the lists file when it was written for
    this generation and data collection (brought in line by id when the manifest version or
    the count moved since), else read from Chroma; either way the file is left current."""
    store.check_generation(manifest)
    if lists_file is None:
        return _read_lists(store, manifest)
    try:
        data_uuid = store.data_uuid(manifest.data_collection)
    except GenerationGone as exc:
        raise StaleIndexError(f"Index {store.name!r} was rebuilt while it was being opened: open it again.") from exc

    def from_chroma(ids: np.ndarray) -> list[dict[str, Any]]:
        found = {
            i: filterable(m or {})
            for page in store.iter_data(manifest.data_collection, ["metadatas"])
            for i, m in zip(page["ids"], page["metadatas"], strict=True)
        }
        return [found.get(doc_id, {}) for doc_id in ids.tolist()]

    fence = manifest.outlier_fence
    stored = lists_file.load(manifest.generation, data_uuid, manifest.dimension, from_chroma, fence=fence) if use_file else None
    if stored is not None and not _same_centroids(stored[0].centroids, store.read_centroids(manifest.generation)):
        logger.info("index %r: the lists file's centroids differ from Chroma's; reading Chroma", store.name)
        stored = None
    if stored is not None:
        lists, header = stored
        if header["version"] == manifest.version and header["count"] == store.count(manifest.data_collection):
            return lists
        lists = _reconcile(store, manifest, lists, int(header["version"]))
    else:
        lists = _read_lists(store, manifest)
    lists_file.save(lists, manifest.generation, manifest.version, data_uuid)
    # Served from the file just written: memory-mapped, and in the file's dtype.
    mapped = lists_file.load(manifest.generation, data_uuid, manifest.dimension, from_chroma, verify=False, fence=fence)
    return lists if mapped is None else mapped[0]


def _same_centroids(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and bool(np.allclose(a, b, atol=1e-6))


def _read_lists(store: ChromaStore, manifest: Manifest) -> InvertedLists:
    """The inverted lists read from Chroma, checked against the manifest. Records the
    assignments do not know (written to the data collection by someone else) go to their
    nearest centroid; assignments of records no longer in the data are ignored."""
    try:
        centroids = store.read_centroids(manifest.generation)
        assignments = store.read_assignments(manifest.generation)
        ids: list[str] = []
        vectors: list[np.ndarray] = []
        metadatas: list[dict[str, Any]] = []
        for page in store.iter_data(manifest.data_collection, ["embeddings", "metadatas"]):
            ids.extend(page["ids"])
            vectors.append(unit_rows(np.asarray(page["embeddings"], dtype=np.float32)))
            metadatas.extend(filterable(m or {}) for m in page["metadatas"])
    except GenerationGone as exc:
        raise StaleIndexError(f"Index {store.name!r} was rebuilt while it was being opened: open it again.") from exc
    if centroids.shape != (manifest.n_clusters, manifest.dimension):
        raise IndexCorruptedError(
            f"Index {store.name!r} has {centroids.shape[0]} centroids of dimension {centroids.shape[-1]}, its manifest "
            f"says {manifest.n_clusters} of {manifest.dimension}: rebuild it (ClusterIndex.build or from_vector_store)."
        )
    matrix = np.concatenate(vectors) if vectors else np.zeros((0, manifest.dimension), np.float32)
    if matrix.shape[1] != manifest.dimension:
        raise IndexCorruptedError(
            f"Collection {manifest.data_collection!r} holds {matrix.shape[1]}-d vectors, the index {manifest.dimension}-d: "
            f"rebuild the index for this collection."
        )
    labels = np.asarray([assignments.get(doc_id, -1) for doc_id in ids], dtype=np.int64)
    bad = np.flatnonzero((labels < 0) | (labels >= manifest.n_clusters))
    if len(bad):
        logger.info("index %r: %d record(s) had no valid cluster; assigned by nearest centroid", store.name, len(bad))
        labels[bad] = assign(matrix[bad], centroids)
    return InvertedLists(centroids, ids, matrix, labels, metadatas, fence=manifest.outlier_fence)


def _reconcile(
    store: ChromaStore, manifest: Manifest, lists: InvertedLists, since: int, compare_metadata: bool = False
) -> InvertedLists:
    """``lists`` (current as of manifest version ``since``) brought in line with the data
    collection: records added by others fetched and assigned, records deleted dropped, records
    the library rewrote since ``since`` (their assignments say so) fetched again, and with
    ``compare_metadata`` records whose metadata changed in place. Returns ``lists`` itself when
    nothing changed. Costs one ids-only read of the collection (with ``compare_metadata``:
    every record's metadata), one filtered read of the assignments, plus the changed records."""
    data = manifest.data_collection
    present: list[str] = []
    current: list[dict[str, Any]] = []
    for page in store.iter_data(data, ["metadatas"] if compare_metadata else []):
        present.extend(page["ids"])
        if compare_metadata:
            current.extend(filterable(m or {}) for m in page["metadatas"])
    known = set(lists.ids.tolist())
    still = set(present)
    gone = known - still
    new = [doc_id for doc_id in present if doc_id not in known]
    changed = set(store.changed_since(manifest.generation, since)) & known & still
    if compare_metadata:
        now = dict(zip(present, current, strict=True))
        changed.update(i for i, m in zip(lists.ids.tolist(), lists.metadatas.tolist(), strict=True) if i in now and now[i] != m)
    if not gone and not new and not changed:
        return lists
    result = lists.removed(sorted(gone | changed)) if gone or changed else lists
    fetch = new + sorted(changed)
    if fetch:
        found = store.fetch_vectors(data, fetch)
        vectors = unit_rows(np.asarray(found["embeddings"], dtype=np.float32))
        result = result.added(
            list(found["ids"]), vectors, assign(vectors, lists.centroids), [filterable(m or {}) for m in found["metadatas"]]
        )
    return result


def _chunks(items: Iterable[BaseNode], size: int) -> Iterator[list[BaseNode]]:
    iterator = iter(items)
    while chunk := list(itertools.islice(iterator, size)):
        yield chunk


def _page_batches(pages: Iterable[dict[str, Any]], progress: Any = None) -> Iterator[Batch]:
    """Pages of Chroma records as write batches (vectors re-normalised); ``progress`` (a tqdm
    bar) counts them."""
    for page in pages:
        if progress is not None:
            progress.update(len(page["ids"]))
        vectors = np.asarray(page["embeddings"], dtype=np.float32)
        vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        texts = [d or "" for d in page.get("documents") or [""] * len(page["ids"])]
        yield list(page["ids"]), vectors, texts, [dict(m or {}) for m in page["metadatas"]]


def _check_embeddings(ids: list[str], vectors: np.ndarray) -> None:
    """Every embedding of a write is finite and non-zero, checked before anything is written."""
    bad = np.flatnonzero(~np.all(np.isfinite(vectors), axis=1) | ~np.any(vectors, axis=1))
    if len(bad):
        raise InvalidEmbeddingError(
            f"{len(bad)} node(s) have an embedding with NaN, infinite or only zero values (e.g. "
            f"{[ids[i] for i in bad[:3]]}); nothing was written: check the embedding model's output for them."
        )


def _check_new_ids(ids: list[str], seen: set[str]) -> None:
    counts = Counter(ids)
    duplicates = sorted({doc_id for doc_id in ids if doc_id in seen or counts[doc_id] > 1})
    if duplicates:
        raise DuplicateIdError(
            f"Duplicate document id(s) {duplicates[:5]}: every document needs a unique id (set Document(id_=...))."
        )


def _check_embedder(embedder: BaseEmbedding, manifest: Manifest) -> None:
    model_id = embedding_model_id(embedder)
    if model_id != manifest.embed_model:
        raise EmbeddingMismatchError(
            f"This index was built with {manifest.embed_model!r} but the query embedder is {model_id!r}. "
            f"Open it with embed_model={manifest.embed_model!r}, or rebuild the index with the new model."
        )
    dimension = _embedding_dim(embedder)
    if dimension != manifest.dimension:
        raise EmbeddingMismatchError(
            f"The query embedder gives {dimension}-d vectors but the index stores {manifest.dimension}-d vectors "
            f"from {manifest.embed_model!r}: use the model the index was built with."
        )


def _embedding_dim(embedder: BaseEmbedding) -> int:
    return len(embedder.get_query_embedding("dimension check"))


def _to_node(doc_id: str, text: str, metadata: dict[str, Any], cluster_id: int) -> BaseNode:
    try:
        node = metadata_dict_to_node(metadata, text=text)
    except (ValueError, KeyError, TypeError):  # a collection not written by LlamaIndex
        extra = {k: v for k, v in metadata.items() if not k.startswith("_") and k != CLUSTER_ID_KEY}
        node = TextNode(id_=doc_id, text=text, metadata=extra)
    node.metadata[CLUSTER_ID_KEY] = cluster_id
    for excluded in (node.excluded_llm_metadata_keys, node.excluded_embed_metadata_keys):
        if CLUSTER_ID_KEY not in excluded:
            excluded.append(CLUSTER_ID_KEY)
    return node


def check_positive_int(name: str, value: Any, allow_none: bool = False) -> int | None:
    """``value`` as an int, refusing bools, floats and non-positive numbers (numpy ints are fine)."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be a positive int{' or None' if allow_none else ''}, not {value!r}.")
    return int(value)
