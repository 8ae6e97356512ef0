"""ClusterIndex: build, open, grow and re-cluster a cluster-routed index on Chroma.

Data flows one way: documents -> embeddings -> clusters -> store, and on open
store -> in-memory inverted lists, which the retriever routes queries through.
"""

from __future__ import annotations

import itertools
from collections import Counter
import logging
import threading
from collections.abc import Iterable, Iterator, Sized
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
from chromadb.api import ClientAPI
from chromadb.errors import NotFoundError
from llama_index.core.base.embeddings.base import BaseEmbedding
from llama_index.core.schema import BaseNode, MetadataMode, NodeWithScore, TextNode
from llama_index.core.vector_stores.utils import metadata_dict_to_node, node_to_metadata_dict
from tqdm.auto import tqdm

from cluster_retriever.clustering import NClusters, assign, cluster_top_terms, fit_clusters, resolve_n_clusters
from cluster_retriever.datasets import iter_documents
from cluster_retriever.embeddings import embed_texts, embedding_model_id, resolve_embed_model
from cluster_retriever.errors import DuplicateIdError, EmbeddingMismatchError, EmptyCorpusError
from cluster_retriever.inverted_lists import InvertedLists
from cluster_retriever.store import CLUSTER_ID_KEY, ChromaStore, Manifest, make_client, pages

if TYPE_CHECKING:
    from cluster_retriever.retriever import ClusterRetriever

logger = logging.getLogger(__name__)

DEFAULT_NAME = "cluster_index"
# Records of one generation as they are written: ids, unit vectors, texts, Chroma metadata.
Batch = tuple[list[str], np.ndarray, list[str], list[dict]]


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

    def __init__(self, store: ChromaStore, manifest: Manifest, lists: InvertedLists, embed_model: BaseEmbedding) -> None:
        self.store = store
        self.manifest = manifest
        self.lists = lists
        self.embed_model = embed_model
        self._write_lock = threading.Lock()
        self._records: dict[str, tuple[str, dict]] | None = None

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
        if isinstance(documents, (str, Path)):
            documents = iter_documents(documents)
        if isinstance(documents, Sized):
            resolve_n_clusters(n_clusters, len(documents))  # fail before any embedding work
        total = len(documents) if isinstance(documents, Sized) else None
        embedder = resolve_embed_model(embed_model)
        store = ChromaStore(client or make_client(path, host, port), name)

        def batches() -> Iterator[Batch]:
            seen: set[str] = set()
            progress = tqdm(total=total, unit="doc", desc="embedding", disable=not show_progress)
            for chunk in _chunks(documents, batch_size):
                ids = [node.node_id for node in chunk]
                _check_new_ids(ids, seen)
                seen.update(ids)
                vectors = embed_texts(embedder, [node.get_content(metadata_mode=MetadataMode.EMBED) for node in chunk])
                texts = [node.get_content(metadata_mode=MetadataMode.NONE) for node in chunk]
                yield ids, vectors, texts, [_node_metadata(node) for node in chunk]
                progress.update(len(chunk))
            progress.close()

        return cls._write(store, batches(), embedder, n_clusters, random_state, show_progress)

    @classmethod
    def from_vector_store(
        cls,
        vector_store: Any,
        *,
        embed_model: str | BaseEmbedding | None = None,
        name: str = DEFAULT_NAME,
        path: str | Path | None = None,
        host: str | None = None,
        port: int = 8000,
        client: ClientAPI | None = None,
        n_clusters: NClusters = "auto",
        random_state: int = 0,
        show_progress: bool = True,
    ) -> ClusterIndex:
        """Turn an existing Chroma collection into a cluster index without re-embedding.

        ``vector_store`` is a LlamaIndex ``ChromaVectorStore`` (or a ``VectorStoreIndex`` on
        one) or a ``chromadb`` collection; ``embed_model`` must be the model that wrote it.
        The source collection is read, never modified; the cluster index is written to
        ``client`` (pass the app's own Chroma client to keep both in one database), or to
        ``path`` / ``host`` like ``build``.
        """
        source = _source_collection(vector_store)
        embedder = resolve_embed_model(embed_model)
        stored_dim = len(source.get(limit=1, include=["embeddings"])["embeddings"][0])
        query_dim = _embedding_dim(embedder)
        if stored_dim != query_dim:
            raise EmbeddingMismatchError(
                f"Collection {source.name!r} holds {stored_dim}-d vectors but {embedding_model_id(embedder)!r} gives "
                f"{query_dim}-d: pass the embed_model that wrote the collection."
            )
        store = ChromaStore(client or make_client(path, host, port), name)
        return cls._write(store, _collection_batches(source), embedder, n_clusters, random_state, show_progress)

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
    ) -> ClusterIndex:
        """Open a stored index. Without ``embed_model`` the model named in the manifest is
        loaded; a model whose id or dimension differs from the manifest is refused.
        ``cache_records=True`` calls ``cache_records()`` (see there)."""
        store = ChromaStore(client or make_client(path, host, port), name)
        manifest = store.require_manifest()
        embedder = resolve_embed_model(manifest.embed_model if embed_model is None else embed_model)
        _check_embedder(embedder, manifest)
        ids: list[str] = []
        vectors: list[np.ndarray] = []
        labels: list[int] = []
        for page_ids, page_vectors, page_labels in store.iter_vectors(manifest.generation):
            ids.extend(page_ids)
            vectors.append(page_vectors)
            labels.extend(page_labels)
        matrix = np.concatenate(vectors) if vectors else np.zeros((0, manifest.dimension), np.float32)
        lists = InvertedLists(store.read_centroids(manifest.generation), ids, matrix, np.asarray(labels))
        index = cls(store, manifest, lists, embedder)
        return index.cache_records() if cache_records else index

    @classmethod
    def _write(
        cls,
        store: ChromaStore,
        batches: Iterable[Batch],
        embedder: BaseEmbedding,
        n_clusters: NClusters,
        random_state: int,
        show_progress: bool,
    ) -> ClusterIndex:
        """Write a new generation, cluster it, then switch the manifest to it."""
        previous = store.read_manifest()
        generation = store.next_generation()
        try:
            all_ids: list[str] = []
            all_vectors: list[np.ndarray] = []
            for ids, vectors, texts, metadatas in batches:
                for metadata in metadatas:
                    metadata[CLUSTER_ID_KEY] = -1  # set once the clusters are fitted
                store.add_nodes(generation, ids, vectors, texts, metadatas)
                all_ids.extend(ids)
                all_vectors.append(vectors)
            if not all_ids:
                raise EmptyCorpusError("The corpus is empty: give at least one document with text.")
            matrix = np.concatenate(all_vectors)
            if show_progress:
                logger.info("clustering %d vectors", len(matrix))
            clustering = fit_clusters(matrix, n_clusters, random_state)
            store.set_cluster_ids(generation, all_ids, clustering.labels)
            store.write_centroids(generation, clustering.centroids)
            manifest = Manifest(
                embed_model=embedding_model_id(embedder),
                dimension=matrix.shape[1],
                n_clusters=len(clustering.centroids),
                doc_count=len(all_ids),
                generation=generation,
                random_state=random_state,
            )
            store.write_manifest(manifest)
        except BaseException:
            store.drop_generation(generation)
            raise
        if previous is not None:
            store.drop_generation(previous.generation)
        return cls(store, manifest, InvertedLists(clustering.centroids, all_ids, matrix, clustering.labels), embedder)

    # -- upkeep ---------------------------------------------------------------------------
    def add(self, documents: Iterable[BaseNode], show_progress: bool = False) -> list[str]:
        """Embed and store new nodes, each in its nearest existing cluster (no re-clustering)."""
        nodes = list(documents)
        if not nodes:
            raise EmptyCorpusError("Nothing to add: give at least one document.")
        ids = [node.node_id for node in nodes]
        _check_new_ids(ids, set())
        stored = [doc_id for doc_id in ids if doc_id in self.lists]
        if stored:
            raise DuplicateIdError(
                f"{len(stored)} id(s) are already in the index (e.g. {stored[:3]}); delete them first or give new ids."
            )
        vectors = embed_texts(self.embed_model, [n.get_content(metadata_mode=MetadataMode.EMBED) for n in nodes], show_progress)
        labels = assign(vectors, self.lists.centroids)
        metadatas = [{**_node_metadata(node), CLUSTER_ID_KEY: int(c)} for node, c in zip(nodes, labels)]
        texts = [node.get_content(metadata_mode=MetadataMode.NONE) for node in nodes]
        with self._write_lock:
            self.store.add_nodes(self.manifest.generation, ids, vectors, texts, metadatas)
            self.lists = self.lists.added(ids, vectors, labels)
            if self._records is not None:
                self._records.update(zip(ids, zip(texts, metadatas)))
            self._save_count()
        return ids

    def delete(self, ids: Sequence[str]) -> None:
        """Delete nodes by id; unknown ids raise ``KeyError`` and nothing is deleted."""
        missing = [doc_id for doc_id in ids if doc_id not in self.lists]
        if missing:
            raise KeyError(f"{len(missing)} id(s) are not in the index (e.g. {missing[:3]}); nothing was deleted.")
        with self._write_lock:
            self.store.delete_nodes(self.manifest.generation, ids)
            self.lists = self.lists.removed(ids)
            if self._records is not None:
                for doc_id in ids:
                    self._records.pop(doc_id, None)
            self._save_count()

    def recluster(self, n_clusters: NClusters = "auto", random_state: int | None = None, show_progress: bool = False) -> None:
        """Fit the clusters again over the stored vectors (after many adds or deletes)."""
        collection = self.store.nodes(self.manifest.generation)
        seed = self.manifest.random_state if random_state is None else random_state
        with self._write_lock:
            rebuilt = self._write(self.store, _collection_batches(collection), self.embed_model, n_clusters, seed, show_progress)
            self.manifest, self.lists = rebuilt.manifest, rebuilt.lists
            if self._records is not None:
                self.cache_records()

    def cache_records(self) -> ClusterIndex:
        """Keep every node's text and metadata in memory too, so a query skips the Chroma
        round trip that fetches its winners (about as long as Chroma's whole query). Memory
        then grows with the corpus text; ``add``, ``delete`` and ``recluster`` keep it in step."""
        self._records = {doc_id: (text, metadata) for doc_id, text, metadata in self.store.iter_records(self.manifest.generation)}
        return self

    def _save_count(self) -> None:
        self.manifest = self.manifest.model_copy(update={"doc_count": len(self.lists)})
        self.store.write_manifest(self.manifest)

    # -- reading --------------------------------------------------------------------------
    @property
    def n_clusters(self) -> int:
        return self.lists.n_clusters

    @property
    def cluster_sizes(self) -> np.ndarray:
        return self.lists.sizes

    def __len__(self) -> int:
        return len(self.lists)

    def top_terms(self, n_terms: int = 5) -> list[list[str]]:
        """The most characteristic words of each cluster, so a person can see what it is about."""
        records = list(self.store.iter_records(self.manifest.generation))
        texts = [text for _, text, _ in records]
        labels = np.asarray([int(metadata[CLUSTER_ID_KEY]) for _, _, metadata in records], dtype=np.int64)
        return cluster_top_terms(texts, labels, self.n_clusters, n_terms)

    def as_retriever(self, **kwargs: Any) -> ClusterRetriever:
        """A ``ClusterRetriever`` over this index; keyword arguments go to its constructor."""
        from cluster_retriever.retriever import ClusterRetriever

        return ClusterRetriever(self, **kwargs)

    def search(self, query: np.ndarray, clusters: Sequence[int] | None, top_k: int) -> tuple[list[NodeWithScore], int]:
        """Exact top-k inside ``clusters`` (all when None) for a unit query vector;
        returns the hits, with the cluster id in their metadata, and how many vectors were scanned."""
        result = self.lists.scan(query, clusters, top_k)
        cached = self._records
        if cached is None:
            records = self._fetch(result.ids)
        else:
            records = {doc_id: cached[doc_id] for doc_id in result.ids if doc_id in cached}
        hits = [
            NodeWithScore(node=_to_node(doc_id, *records[doc_id]), score=float(score))
            for doc_id, score in zip(result.ids, result.scores)
            if doc_id in records  # deleted between scan and fetch
        ]
        return hits, result.n_scanned

    def _fetch(self, ids: Sequence[str]) -> dict[str, tuple[str, dict]]:
        generation = self.manifest.generation
        try:
            return self.store.fetch(generation, ids)
        except NotFoundError:
            if self.manifest.generation == generation:
                raise
            # Re-clustered while this query ran: its generation is gone, the same ids are in the new one.
            return self.store.fetch(self.manifest.generation, ids)

    def check_query_vector(self, vector: np.ndarray) -> None:
        if vector.shape != (self.manifest.dimension,):
            raise EmbeddingMismatchError(
                f"Query embedding has shape {vector.shape}, the index stores {self.manifest.dimension}-d vectors "
                f"from {self.manifest.embed_model!r}: embed queries with that model."
            )


def _chunks(items: Iterable[BaseNode], size: int) -> Iterator[list[BaseNode]]:
    iterator = iter(items)
    while chunk := list(itertools.islice(iterator, size)):
        yield chunk


def _collection_batches(collection: Any) -> Iterator[Batch]:
    """Pages of an existing Chroma collection as write batches (vectors re-normalised)."""
    for page in pages(collection, ["embeddings", "documents", "metadatas"]):
        vectors = np.asarray(page["embeddings"], dtype=np.float32)
        vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        yield list(page["ids"]), vectors, [d or "" for d in page["documents"]], [dict(m or {}) for m in page["metadatas"]]


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


def _node_metadata(node: BaseNode) -> dict:
    metadata = node_to_metadata_dict(node, remove_text=True, flat_metadata=True)
    return {key: ("" if value is None else value) for key, value in metadata.items()}


def _to_node(doc_id: str, text: str, metadata: dict) -> BaseNode:
    cluster_id = int(metadata.get(CLUSTER_ID_KEY, -1))
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


def _source_collection(vector_store: Any) -> Any:
    """The chromadb collection behind a ChromaVectorStore, a VectorStoreIndex, or a collection."""
    if hasattr(vector_store, "vector_store"):  # VectorStoreIndex
        vector_store = vector_store.vector_store
    collection = getattr(vector_store, "_collection", vector_store)
    if not all(hasattr(collection, attr) for attr in ("get", "count", "name")):
        raise TypeError(
            "from_vector_store needs a ChromaVectorStore, a VectorStoreIndex on one, or a chromadb collection; "
            f"got {type(vector_store).__name__}."
        )
    if collection.count() == 0:
        raise EmptyCorpusError(f"Chroma collection {collection.name!r} is empty: nothing to cluster.")
    return collection
