"""Loading a handle's inverted lists and keeping them in line with what Chroma holds.

Chroma is the truth; the lists are the search structure made from it: read from the lists
file when one was written for the live generation (``store.lists_file``), brought in line by
id when the store moved since (``reconcile``), else read from Chroma whole (``read_lists``).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from cluster_retriever.clustering import assign
from cluster_retriever.embeddings import unit_rows
from cluster_retriever.errors import IndexCorruptedError, StaleIndexError
from cluster_retriever.filters import filterable
from cluster_retriever.scan.lists import InvertedLists
from cluster_retriever.store.chroma import ChromaStore, GenerationGone
from cluster_retriever.store.lists_file import ListsFile
from cluster_retriever.store.manifest import Manifest

logger = logging.getLogger(__name__)


def load_live(store: ChromaStore, lists_file: ListsFile | None, attempts: int = 5) -> tuple[Manifest, InvertedLists]:
    """The newest manifest and its lists. A generation that vanishes while it is read was
    replaced by another client's commit (the manifest moved): read the new one instead."""
    for attempt in range(attempts):
        manifest = store.manifests.require()
        try:
            return manifest, load_lists(store, manifest, lists_file)
        except (IndexCorruptedError, StaleIndexError):
            if attempt == attempts - 1 or store.manifests.require().version == manifest.version:
                raise
    raise AssertionError("unreachable")


def load_lists(store: ChromaStore, manifest: Manifest, lists_file: ListsFile | None, use_file: bool = True) -> InvertedLists:
    """The inverted lists of the live generation: from the lists file when it was written for
    this generation and data collection (brought in line by id when the manifest version or
    the count moved since), else read from Chroma; either way the file is left current."""
    store.check_generation(manifest)
    if lists_file is None:
        return read_lists(store, manifest)
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
        lists = reconcile(store, manifest, lists, int(header["version"]))
    else:
        lists = read_lists(store, manifest)
    lists_file.save(lists, manifest.generation, manifest.version, data_uuid)
    # Served from the file just written: memory-mapped, and in the file's dtype.
    mapped = lists_file.load(manifest.generation, data_uuid, manifest.dimension, from_chroma, verify=False, fence=fence)
    return lists if mapped is None else mapped[0]


def _same_centroids(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and bool(np.allclose(a, b, atol=1e-6))


def read_lists(store: ChromaStore, manifest: Manifest) -> InvertedLists:
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


def reconcile(
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
