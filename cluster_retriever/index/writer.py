"""Writing an index: every write under the writer lock, on the newest state, retried when
another client committed first (the manifest's compare-and-swap) or re-clustered under it.

Concurrency contract (README, "Reliability"): writers are serialised (threads of a process
share a lock; one process at a time writes an embedded store; clients of a server commit
with a compare-and-swap and retry on the new state), every write that returned is stored,
and a query sees one consistent state: the one before or the one after a write.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

import numpy as np
from llama_index.core.base.embeddings.base import BaseEmbedding
from llama_index.core.schema import BaseNode

from cluster_retriever.calibration import MIN_DOCS, MIN_QUERIES, calibrate, calibrated_on, pseudo_query_rows, query_like_crops
from cluster_retriever.clustering import NClusters, assign, fit_clusters
from cluster_retriever.embeddings import embed_queries, embedding_model_id
from cluster_retriever.errors import ConcurrentWriteError, DuplicateIdError, EmptyCorpusError
from cluster_retriever.filters import filterable
from cluster_retriever.index.ingest import Batch, node_rows, page_batches
from cluster_retriever.index.search import check_query_vector
from cluster_retriever.index.snapshot import Snapshot
from cluster_retriever.index.state import LiveState
from cluster_retriever.scan.lists import InvertedLists
from cluster_retriever.store.chroma import GenerationGone
from cluster_retriever.store.locking import WriterLock
from cluster_retriever.store.manifest import FORMAT_VERSION, Manifest

logger = logging.getLogger(__name__)

WRITE_RETRIES = 5
T = TypeVar("T")


def crop_queries(
    texts: Mapping[str, str], lists: InvertedLists, seed: int, embed_model: BaseEmbedding
) -> tuple[np.ndarray, np.ndarray] | None:
    """The calibration's pseudo-query rows that have text in ``texts`` (id -> text), and a
    sentence of each embedded as a query (``calibration.query_like_crops``); None when too few
    have text (an app that stores vectors only) or the model's vectors do not fit the lists."""
    rows = np.asarray(
        [row for row in pseudo_query_rows(len(lists), seed) if texts.get(lists.ids[row], "").strip()], dtype=np.int64
    )
    if len(rows) < MIN_QUERIES:
        return None
    vectors = embed_queries(embed_model, query_like_crops([texts[doc_id] for doc_id in lists.ids[rows]], seed))
    return (rows, vectors) if vectors.shape[1] == lists.dim else None


class Writer:
    """The writes of one index handle over its ``LiveState``."""

    def __init__(self, live: LiveState, embed_model: BaseEmbedding, lock_timeout_s: float) -> None:
        self.live = live
        self.store = live.store
        self.embed_model = embed_model
        self.lock_timeout_s = lock_timeout_s
        location, folder = self.store.location()
        self.lock = WriterLock.for_index(location, self.store.name, folder)

    def write(self, operation: str, apply: Callable[[Snapshot], T]) -> T:
        """Run ``apply(snapshot)`` under the writer lock on the newest state, retrying when
        another client committed first or re-clustered under it."""
        with self.lock.hold(self.lock_timeout_s):
            for _ in range(WRITE_RETRIES):
                self.live.refresh_if_moved()  # a stale handle must never write on an old state
                try:
                    return apply(self.live.snapshot)
                except (ConcurrentWriteError, GenerationGone) as exc:
                    logger.info("%s raced another writer (%s); retrying on the new state", operation, exc)
            raise ConcurrentWriteError(
                f"{operation} lost {WRITE_RETRIES} races in a row to other writers of index {self.store.name!r}; "
                f"nothing was lost, but this call did not complete: retry it later."
            )

    def fit(
        self, batches: Iterable[Batch], n_clusters: NClusters, random_state: int, show_progress: bool, adopted: str | None
    ) -> None:
        """A new generation fitted on ``batches``, under the writer lock: written to new data
        (a build from documents), or over the ``adopted`` collection."""
        with self.lock.hold(self.lock_timeout_s):
            expected = self.store.manifests.read()
            self.rebuild(batches, n_clusters, random_state, show_progress, expected, adopted, adopted is None)

    def rebuild(
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
            all_texts: list[str] = []
            all_vectors: list[np.ndarray] = []
            all_metadatas: list[dict[str, Any]] = []
            for ids, vectors, texts, metadatas in batches:
                if write_data:
                    store.add_records(data, ids, vectors, texts, metadatas, create=True)
                    all_texts.extend(texts)  # for the calibration's crops (the caller holds these texts anyway)
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
            model = embedding_model_id(self.embed_model)
            queries = self._calibration_queries(expected, model, matrix.shape[1])
            if queries is not None:  # calibrated on real queries before: recalibrated on them
                store.write_queries(generation, queries)
            fields = {
                "format_version": FORMAT_VERSION,
                "embed_model": model,
                "dimension": matrix.shape[1],
                "n_clusters": len(clustering.centroids),
                "generation": generation,
                "random_state": random_state,
                "data_collection": data,
                "clustered_count": len(all_ids),
                "outlier_fence": lists.fence if math.isfinite(lists.fence) else None,
                **(
                    calibrated_on(lists, queries)
                    if queries is not None
                    else {
                        "calibration": calibrate(
                            lists,
                            random_state,
                            crops=self._crops(lists, random_state, data, (all_ids, all_texts) if write_data else None),
                        ),
                        "query_fence": None,
                    }
                ),
                "owns_data": write_data or (expected is not None and expected.owns_data and expected.data_collection == data),
            }
            manifest = (
                expected.bumped(**fields) if expected is not None else Manifest.model_validate({"version": version, **fields})
            )
            store.manifests.commit(manifest)
        except BaseException:
            store.drop_generation(generation, keep=None if created else data)
            raise
        live = self.live
        records = live.read_records(manifest) if live.snapshot.records is not None else None
        live.switch(Snapshot(manifest, lists, records), retire=False)
        if live.lists_file is not None:
            live.lists_file.save(lists, generation, manifest.version, store.data_uuid(data))
        if expected is not None and expected.owns_data and expected.data_collection != data:
            store.drop_data(expected.data_collection)  # a rebuild from documents replaced it
        # Generations of killed builds, and the one just replaced (once no query here reads it).
        # On a server, other clients may still be reading the one just replaced, and no lock
        # tells: it stays until the next rebuild, a whole re-clustering of grace.
        on_server = store.location()[1] is None
        for orphan in store.orphans(manifest):
            if not (on_server and expected is not None and orphan == expected.generation):
                live.readers.retire(orphan)

    def _crops(
        self, lists: InvertedLists, seed: int, data: str, built: tuple[list[str], list[str]] | None
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """``crop_queries`` of the pseudo-query documents' texts: from a build's own batches
        (``built``: ids and texts), which this process has not read back from Chroma (an
        embedded client that has read a collection fails on another process's later writes to
        it); read from ``data`` on a re-clustering or an adoption, which read it anyway."""
        if len(lists) < MIN_DOCS:
            return None  # too small to calibrate (scanned exactly): nothing to read
        wanted = set(lists.ids[pseudo_query_rows(len(lists), seed)].tolist())
        if built is not None:
            texts = {doc_id: text for doc_id, text in zip(*built, strict=True) if doc_id in wanted}
        else:
            texts = {doc_id: text for doc_id, text, _ in self.store.get_records(data, sorted(wanted), None)}
        return crop_queries(texts, lists, seed, self.embed_model)

    def _calibration_queries(self, expected: Manifest | None, model: str, dimension: int) -> np.ndarray | None:
        """The real queries the replaced generation was calibrated on, when they still fit
        (same embedding model and dimension)."""
        if expected is None or expected.embed_model != model:
            return None
        queries = self.store.read_queries(expected.generation)
        return queries if queries is not None and queries.shape[1] == dimension else None

    def add(self, nodes: list[BaseNode], show_progress: bool, replace: bool) -> list[str]:
        (ids, vectors, texts, metadatas), raw = node_rows(nodes, self.embed_model, show_progress)

        def apply(state: Snapshot) -> list[str]:
            check_query_vector(state.manifest, vectors[0])  # the dimension of the index
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
            self.store.manifests.commit(manifest)
            records = state.records
            if records is not None:
                records = {**records, **dict(zip(new_ids, zip(new_texts, new_metadatas, strict=True), strict=True))}
            kept = state.lists.removed(replaced) if replaced else state.lists
            lists = kept.added(new_ids, vectors[new], labels, [filterable(m) for m in new_metadatas])
            self.live.switch(Snapshot(manifest, lists, records))
            return ids

        return self.write("add", apply)

    def _new_rows(
        self, state: Snapshot, ids: list[str], texts: list[str], metadatas: list[dict[str, Any]], replace: bool
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

    def delete(self, ids: Sequence[str], missing_ok: bool) -> None:
        def apply(state: Snapshot) -> None:
            missing = [doc_id for doc_id in ids if doc_id not in state.lists]
            if missing and not missing_ok:
                raise KeyError(f"{len(missing)} id(s) are not in the index (e.g. {missing[:3]}); nothing was deleted.")
            present = [doc_id for doc_id in ids if doc_id in state.lists]
            if not present:
                return
            self.store.delete_records(state.manifest.data_collection, present)
            self.store.delete_assignments(state.manifest.generation, present)
            manifest = state.manifest.bumped()
            self.store.manifests.commit(manifest)
            records = state.records
            if records is not None:
                gone = set(present)
                records = {k: v for k, v in records.items() if k not in gone}
            self.live.switch(Snapshot(manifest, state.lists.removed(present), records))

        self.write("delete", apply)

    def delete_where(self, where: dict[str, Any]) -> list[str]:
        data = self.live.snapshot.manifest.data_collection
        ids = self.store.ids_where(data, where)
        if ids:
            self.delete(list(dict.fromkeys(ids)), missing_ok=True)
            leftover = set(ids) - set(self.live.snapshot.lists.ids)
            if leftover:  # written by another client and not refreshed in yet: delete from the data too
                self.store.delete_records(data, sorted(leftover))
        return ids

    def calibrate(self, queries: np.ndarray) -> None:
        """The routing budget and the off-topic fence calibrated on real query vectors,
        committed as a new version; the queries are kept with the generation, so a
        re-clustering recalibrates on them."""

        def apply(state: Snapshot) -> None:  # the queries were checked by ClusterIndex.calibrate
            manifest = state.manifest.bumped(format_version=FORMAT_VERSION, **calibrated_on(state.lists, queries))
            self.store.write_queries(state.manifest.generation, queries)  # before the commit that uses them
            self.store.manifests.commit(manifest)
            self.live.switch(Snapshot(manifest, state.lists, state.records))

        self.write("calibrate", apply)

    def recluster(self, n_clusters: NClusters, random_state: int | None, show_progress: bool) -> None:
        def apply(state: Snapshot) -> None:
            data = state.manifest.data_collection
            seed = state.manifest.random_state if random_state is None else random_state
            batches = page_batches(self.store.iter_data(data, ["embeddings", "metadatas"]))
            self.rebuild(batches, n_clusters, seed, show_progress, state.manifest, data, False)

        self.write("recluster", apply)
