"""What comes into an index: documents and nodes as write batches (id, unit vector, text,
metadata), embedded with the index's model, and the checks made before anything is written."""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
from llama_index.core.base.embeddings.base import BaseEmbedding
from llama_index.core.schema import BaseNode, MetadataMode
from tqdm.auto import tqdm

from cluster_retriever.embeddings import embed_texts, embedding_model_id, unit_rows
from cluster_retriever.errors import DuplicateIdError, EmbeddingMismatchError, EmptyCorpusError, InvalidEmbeddingError
from cluster_retriever.store.manifest import Manifest
from cluster_retriever.store.records import node_record

Batch = tuple[list[str], np.ndarray, list[str], list[dict[str, Any]]]
"""Records of one generation as they are written: ids, unit vectors, texts, Chroma metadata."""


def node_batches(
    documents: Iterable[BaseNode], embedder: BaseEmbedding, batch_size: int, total: int | None, show_progress: bool
) -> Iterator[Batch]:
    """``documents`` embedded a batch at a time (ids checked unique across all of them); an
    ``EmptyCorpusError`` at the end when every one was empty."""
    seen: set[str] = set()
    any_text = False
    progress = tqdm(total=total, unit="doc", desc="embedding", disable=not show_progress)
    for chunk in chunks(documents, batch_size):
        ids = [node.node_id for node in chunk]
        check_new_ids(ids, seen)
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


def node_rows(nodes: list[BaseNode], embedder: BaseEmbedding, show_progress: bool) -> tuple[Batch, np.ndarray]:
    """Nodes to add as one batch, and their raw embeddings (what Chroma stores): the nodes'
    own when every one carries one (as ``VectorStoreIndex`` gives them), else embedded."""
    ids = [node.node_id for node in nodes]
    check_new_ids(ids, set())
    records = [node_record(node) for node in nodes]
    if all(node.embedding is not None for node in nodes):
        raw = np.asarray([node.embedding for node in nodes], dtype=np.float32)
        vectors = unit_rows(raw)
    else:
        embed_inputs = [n.get_content(metadata_mode=MetadataMode.EMBED) for n in nodes]
        raw = vectors = embed_texts(embedder, embed_inputs, show_progress)
    check_embeddings(ids, raw)
    return (ids, vectors, [text for _, text, _ in records], [metadata for _, _, metadata in records]), raw


def chunks(items: Iterable[BaseNode], size: int) -> Iterator[list[BaseNode]]:
    iterator = iter(items)
    while chunk := list(itertools.islice(iterator, size)):
        yield chunk


def page_batches(pages: Iterable[dict[str, Any]], progress: Any = None) -> Iterator[Batch]:
    """Pages of Chroma records as write batches (vectors re-normalised); ``progress`` (a tqdm
    bar) counts them."""
    for page in pages:
        if progress is not None:
            progress.update(len(page["ids"]))
        vectors = np.asarray(page["embeddings"], dtype=np.float32)
        vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        texts = [d or "" for d in page.get("documents") or [""] * len(page["ids"])]
        yield list(page["ids"]), vectors, texts, [dict(m or {}) for m in page["metadatas"]]


def check_embeddings(ids: list[str], vectors: np.ndarray) -> None:
    """Every embedding of a write is finite and non-zero, checked before anything is written."""
    bad = np.flatnonzero(~np.all(np.isfinite(vectors), axis=1) | ~np.any(vectors, axis=1))
    if len(bad):
        raise InvalidEmbeddingError(
            f"{len(bad)} node(s) have an embedding with NaN, infinite or only zero values (e.g. "
            f"{[ids[i] for i in bad[:3]]}); nothing was written: check the embedding model's output for them."
        )


def check_new_ids(ids: list[str], seen: set[str]) -> None:
    counts = Counter(ids)
    duplicates = sorted({doc_id for doc_id in ids if doc_id in seen or counts[doc_id] > 1})
    if duplicates:
        raise DuplicateIdError(
            f"Duplicate document id(s) {duplicates[:5]}: every document needs a unique id (set Document(id_=...))."
        )


def check_embedder(embedder: BaseEmbedding, manifest: Manifest) -> None:
    model_id = embedding_model_id(embedder)
    if model_id != manifest.embed_model:
        raise EmbeddingMismatchError(
            f"This index was built with {manifest.embed_model!r} but the query embedder is {model_id!r}. "
            f"Open it with embed_model={manifest.embed_model!r}, or rebuild the index with the new model."
        )
    dimension = embedding_dim(embedder)
    if dimension != manifest.dimension:
        raise EmbeddingMismatchError(
            f"The query embedder gives {dimension}-d vectors but the index stores {manifest.dimension}-d vectors "
            f"from {manifest.embed_model!r}: use the model the index was built with."
        )


def check_collection_embedder(collection: Any, embedder: BaseEmbedding) -> None:
    """An app's collection holds vectors of the dimension ``embedder`` gives."""
    stored_dim = len(collection.get(limit=1, include=["embeddings"])["embeddings"][0])
    if stored_dim != embedding_dim(embedder):
        raise EmbeddingMismatchError(
            f"Collection {collection.name!r} holds {stored_dim}-d vectors but {embedding_model_id(embedder)!r} gives "
            f"{embedding_dim(embedder)}-d: pass the embed_model that wrote the collection."
        )


def embedding_dim(embedder: BaseEmbedding) -> int:
    return len(embedder.get_query_embedding("dimension check"))
