"""The Chroma adapter: one named index's collections, read in pages and written in batches.

This package (``store``) is the one place that imports chromadb.

A named index is a data collection and three kinds of its own collections in one Chroma
database:

- the data: the app's own collection when the index adopted one (zero copy: documents and
  embeddings stay there, the one source of truth), or ``<name>.g<N>.nodes`` when the index
  was built from documents; either way in ``ChromaVectorStore``'s record format;
- ``<name>.g<N>.centroids``: generation N's unit centroids;
- ``<name>.g<N>.assign``: generation N's cluster of each record (id -> ``cluster_id``);
- ``<name>.g<N>.queries``: the real query vectors the index was calibrated on, when it was
  (``ClusterIndex.calibrate``), carried to the next generation so a re-clustering recalibrates;
- ``<name>.manifest``: an append-only log of manifest versions, one record per write.

A re-clustering writes a new generation of centroids and assignments only; the data is
never copied.

A build writes a new generation and only then commits a manifest that names it (a
compare-and-swap, see ``manifest``), so a crash in the middle leaves the previous index
readable.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from cluster_retriever.errors import IndexCorruptedError, StoreOutOfSyncError
from cluster_retriever.store.chroma_file import ChromaFile, file_state, sqlite_file
from cluster_retriever.store.clients import GENERATION_KINDS, ClientAPI, is_in_memory, is_missing_collection
from cluster_retriever.store.manifest import Manifest, ManifestLog
from cluster_retriever.store.memory import release_freed_heap
from cluster_retriever.store.records import CLUSTER_ID_KEY

VERSION_KEY = "version"  # of an assignment: the manifest version that wrote it
_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{1,100}[A-Za-z0-9]$")
PAGE = 5000


class GenerationGone(Exception):
    """A generation's collection no longer exists (another writer re-clustered and dropped it)."""


_T = TypeVar("_T")


class ChromaStore:
    """The collections of one named cluster index inside a Chroma database."""

    def __init__(self, client: ClientAPI, name: str) -> None:
        if not isinstance(name, str) or not _NAME_PATTERN.match(name):
            raise ValueError(
                f"Index name {name!r} is not usable: use 3-102 letters, digits, '_' or '-', "
                f"starting and ending with a letter or digit."
            )
        self.client = client
        self.name = name
        self.manifests = ManifestLog(client, name)
        self._open: dict[str, Any] = {}
        self._files: dict[str, ChromaFile | None] = {}  # by collection id

    def location(self) -> tuple[str, Path | None]:
        """A key naming this database (its folder, or the server URL), and the folder when embedded."""
        settings = self.client.get_settings()
        if settings.is_persistent and settings.persist_directory:
            folder = Path(settings.persist_directory).expanduser().resolve()
            return str(folder), folder
        if is_in_memory(self.client):
            return f"memory:{id(getattr(self.client, '_system', self.client))}", None
        return f"http://{settings.chroma_server_host}:{settings.chroma_server_http_port}", None

    def is_server(self) -> bool:
        return bool(self.client.get_settings().chroma_server_host)

    def data_uuid(self, data: str) -> str:
        """Chroma's id of a collection: a collection dropped and made again under the same name differs."""
        return str(self._collection(data).id)

    def _generation_name(self, generation: int, kind: str) -> str:
        return f"{self.name}.g{generation}.{kind}"

    def nodes_name(self, generation: int) -> str:
        return self._generation_name(generation, "nodes")

    def _assign_name(self, generation: int) -> str:
        return self._generation_name(generation, "assign")

    def _centroids_name(self, generation: int) -> str:
        return self._generation_name(generation, "centroids")

    def _queries_name(self, generation: int) -> str:
        return self._generation_name(generation, "queries")

    def _collection(self, name: str, create: bool = False) -> Any:
        if name not in self._open:  # looking a collection up costs as much as a small query
            if create:
                self._open[name] = self.client.get_or_create_collection(
                    name, embedding_function=None, configuration={"hnsw": {"space": "cosine"}}
                )
            else:
                try:
                    self._open[name] = self.client.get_collection(name, embedding_function=None)
                except Exception as exc:  # chromadb raises NotFoundError or ValueError by version
                    raise GenerationGone(name) from exc
        return self._open[name]

    def _call(self, name: str, action: Callable[[Any], Any]) -> Any:
        """Run ``action`` on a collection; a collection dropped meanwhile becomes ``GenerationGone``."""
        try:
            return action(self._collection(name))
        except GenerationGone:
            raise
        except Exception as exc:
            if is_missing_collection(exc):
                self._open.pop(name, None)
                raise GenerationGone(name) from exc
            if _is_out_of_sync(exc):
                raise StoreOutOfSyncError(
                    f"Chroma's embedded client cannot read records of {name!r} that another process wrote to "
                    f"{self.location()[0]} (Chroma: {exc}). It is single-process: restart this process (or reopen "
                    f"the app) to see them, or serve the folder with a Chroma server (`chroma run --path <folder>`) "
                    f"and connect every process to it."
                ) from exc
            raise

    # -- generations ----------------------------------------------------------------------
    def generations(self) -> dict[int, set[str]]:
        """The collections of each generation that exist."""
        pattern = re.compile(rf"^{re.escape(self.name)}\.g(\d+)\.({'|'.join(GENERATION_KINDS)})$")
        found: dict[int, set[str]] = {}
        for collection in self.client.list_collections():
            name = collection if isinstance(collection, str) else collection.name
            if match := pattern.match(name):
                found.setdefault(int(match.group(1)), set()).add(name)
        return found

    def orphans(self, manifest: Manifest) -> list[int]:
        """Generations with collections the live manifest does not use (killed builds,
        replaced generations)."""
        return sorted(
            generation
            for generation, names in self.generations().items()
            if generation != manifest.generation and names - {manifest.data_collection}
        )

    def claim_generation(self) -> int:
        """A generation number no other writer will use (see ``ManifestLog.claim``)."""
        manifest = self.manifests.read()
        return self.manifests.claim(max(set(self.generations()) | {manifest.generation if manifest else 0}) + 1)

    def drop_generation(self, generation: int, keep: str | None) -> None:
        """Drop a generation's collections, except ``keep`` (the live data collection)."""
        for kind in GENERATION_KINDS:
            name = self._generation_name(generation, kind)
            if name != keep:
                self._drop(name)

    def _drop(self, name: str) -> None:
        self._open.pop(name, None)
        try:
            self.client.delete_collection(name)
        except Exception:  # already gone
            pass

    def check_generation(self, manifest: Manifest) -> None:
        """The live collections exist, or ``IndexCorruptedError``."""
        for name in (manifest.data_collection, self._centroids_name(manifest.generation), self._assign_name(manifest.generation)):
            try:
                self._collection(name)
            except GenerationGone as exc:
                raise IndexCorruptedError(
                    f"Collection {name!r} of index {self.name!r} is missing. Rebuild the index with "
                    f"ClusterIndex.build(...) (or ClusterIndex.from_vector_store(...))."
                ) from exc

    # -- the one pager and the one batcher -------------------------------------------------
    def iter_data(self, name: str, include: list[str]) -> Iterator[dict[str, Any]]:
        """Pages of collection ``name`` (of this index) with the fields in ``include``: without
        embeddings, one page from an embedded Chroma's file where it is current (``chroma_file``),
        else through Chroma."""
        page = (
            None
            if "embeddings" in include
            else self._in_file(name, lambda f: f.everything("documents" in include, "metadatas" in include))
        )
        if page is not None:
            return iter([page] if page["ids"] else [])
        return pages(lambda **page: self._call(name, lambda c: c.get(**page)), include)

    def _upsert(self, name: str, count: int, batch: Callable[[int, int], dict[str, Any]]) -> None:
        """Upsert ``count`` records into ``name`` in batches Chroma accepts; ``batch(start,
        end)`` gives the fields of records ``start:end``."""
        step = self.client.get_max_batch_size()  # k passes it near 300k documents, a build's data at once
        for start in range(0, count, step):
            fields = batch(start, min(start + step, count))

            def upsert(collection: Any, fields: dict[str, Any] = fields) -> None:
                collection.upsert(**fields)

            self._call(name, upsert)

    # -- data -----------------------------------------------------------------------------
    def add_records(
        self,
        data: str,
        ids: Sequence[str],
        vectors: np.ndarray,
        documents: Sequence[str],
        metadatas: Sequence[dict[str, Any]],
        create: bool = False,
    ) -> None:
        """Upsert records into the data collection ``data``."""
        if create:
            self._collection(data, create=True)
        self._upsert(
            data,
            len(ids),
            lambda a, b: {
                "ids": list(ids[a:b]),
                "embeddings": vectors[a:b],
                "documents": list(documents[a:b]),
                "metadatas": list(metadatas[a:b]),
            },
        )
        release_freed_heap()

    def iter_records(self, data: str) -> Iterator[tuple[str, str, dict[str, Any]]]:
        """(id, text, metadata) of every record."""
        for page in self.iter_data(data, ["documents", "metadatas"]):
            for doc_id, text, metadata in zip(page["ids"], page["documents"], page["metadatas"], strict=True):
                yield doc_id, text or "", metadata or {}

    def fetch(self, data: str, ids: Sequence[str], documents: bool = True) -> dict[str, tuple[str, dict[str, Any]]]:
        """Documents (``""`` when not asked for) and metadata by id, in one read (Chroma does not
        keep the request order): from an embedded Chroma's file where it is current
        (``chroma_file``: 0.10 against 0.66 ms for ten records), else through Chroma."""
        found_in_file = self._in_file(data, lambda f: f.records(ids, documents))
        if found_in_file is not None:
            return found_in_file
        include = ["documents", "metadatas"] if documents else ["metadatas"]
        found = self._call(data, lambda c: c.get(ids=list(ids), include=include))
        texts = found["documents"] if documents else [""] * len(found["ids"])
        return {i: (d or "", m or {}) for i, d, m in zip(found["ids"], texts, found["metadatas"], strict=True)}

    def _file(self, data: str) -> ChromaFile | None:
        """The direct reader of collection ``data``'s records (None: read through Chroma)."""
        collection_id = str(self._collection(data).id)
        if collection_id not in self._files:
            self._files[collection_id] = ChromaFile.open(self.location()[1], collection_id)
        return self._files[collection_id]

    def _in_file(self, data: str, read: Callable[[ChromaFile], _T | None]) -> _T | None:
        """``read`` of collection ``data``'s direct reader; None where there is none or it could
        not vouch for its answer (the caller then asks Chroma)."""
        file = self._file(data)
        return read(file) if file is not None else None

    def fetch_vectors(self, data: str, ids: Sequence[str]) -> dict[str, Any]:
        """Ids, embeddings and metadatas of the given records."""
        found: dict[str, Any] = self._call(data, lambda c: c.get(ids=list(ids), include=["embeddings", "metadatas"]))
        return found

    def drop_data(self, data: str) -> None:
        """Drop a data collection the index owns (never an adopted one)."""
        self._open.pop(data, None)
        try:
            self.client.delete_collection(data)
        except Exception:  # already gone
            pass

    def get_records(
        self, data: str, ids: Sequence[str] | None, where: dict[str, Any] | None
    ) -> list[tuple[str, str, dict[str, Any]]]:
        """(id, text, metadata) of the records with these ids and/or matching ``where``."""
        found = self._call(data, lambda c: c.get(ids=list(ids) if ids else None, where=where, include=["documents", "metadatas"]))
        return [(i, d or "", m or {}) for i, d, m in zip(found["ids"], found["documents"], found["metadatas"], strict=True)]

    def ids_where(self, data: str, where: dict[str, Any]) -> list[str]:
        """Ids of the records whose metadata matches a Chroma ``where`` clause."""
        found = self._call(data, lambda c: c.get(where=where, include=[]))
        return list(found["ids"])

    def delete_records(self, data: str, ids: Sequence[str]) -> None:
        self._call(data, lambda c: c.delete(ids=list(ids)))

    def change_token(self) -> object | None:
        """A value that stays equal while nothing in an embedded Chroma's file changed, written
        by any process or client (None: cannot be told; in-memory and HTTP clients, WAL mode)."""
        folder = self.location()[1]
        return None if folder is None else file_state(sqlite_file(folder))

    def count(self, data: str) -> int:
        """Records in ``data``: from an embedded Chroma's file where it is current (Chroma's own
        first count loads the collection's vector index, ``chroma_file``), else through Chroma."""
        counted = self._in_file(data, lambda f: f.count())
        return counted if counted is not None else int(self._call(data, lambda c: c.count()))

    # -- assignments ----------------------------------------------------------------------
    def write_assignments(
        self, generation: int, ids: Sequence[str], labels: np.ndarray, version: int, create: bool = False
    ) -> None:
        """Each record's cluster, tagged with the manifest ``version`` that writes it, so other
        handles find the records rewritten since they looked (``changed_since``). The 1-d
        vector is a placeholder: Chroma wants one per record."""
        name = self._assign_name(generation)
        if create:
            self._open[name] = self.client.get_or_create_collection(
                name, embedding_function=None, configuration={"hnsw": {"space": "l2"}}
            )
        clusters = [int(c) for c in labels]
        self._upsert(
            name,
            len(ids),
            lambda a, b: {
                "ids": list(ids[a:b]),
                "embeddings": [[float(c)] for c in clusters[a:b]],
                "metadatas": [{CLUSTER_ID_KEY: c, VERSION_KEY: version} for c in clusters[a:b]],
            },
        )

    def changed_since(self, generation: int, version: int) -> list[str]:
        """Ids whose assignment was written by a manifest version after ``version`` (records
        the library added or rewrote since; deletions show as missing ids instead)."""
        name = self._assign_name(generation)
        found = self._call(name, lambda c: c.get(where={VERSION_KEY: {"$gt": version}}, include=[]))
        return list(found["ids"])

    def delete_assignments(self, generation: int, ids: Sequence[str]) -> None:
        self._call(self._assign_name(generation), lambda c: c.delete(ids=list(ids)))

    def read_assignments(self, generation: int) -> dict[str, int]:
        return {
            doc_id: int((metadata or {}).get(CLUSTER_ID_KEY, -1))
            for page in self.iter_data(self._assign_name(generation), ["metadatas"])
            for doc_id, metadata in zip(page["ids"], page["metadatas"], strict=True)
        }

    # -- centroids ------------------------------------------------------------------------
    def write_centroids(self, generation: int, centroids: np.ndarray) -> None:
        name = self._centroids_name(generation)
        self._collection(name, create=True)
        self._upsert(
            name,
            len(centroids),
            lambda a, b: {
                "ids": [str(c) for c in range(a, b)],
                "embeddings": centroids[a:b],
                "metadatas": [{CLUSTER_ID_KEY: c} for c in range(a, b)],
            },
        )

    def read_centroids(self, generation: int) -> np.ndarray:
        return self._read_rows(self._centroids_name(generation))

    # -- calibration queries ----------------------------------------------------------------
    def write_queries(self, generation: int, queries: np.ndarray) -> None:
        """Generation ``generation``'s calibration queries, replacing any it had."""
        name = self._queries_name(generation)
        self._drop(name)
        self._collection(name, create=True)
        self._upsert(name, len(queries), lambda a, b: {"ids": [str(q) for q in range(a, b)], "embeddings": queries[a:b]})

    def read_queries(self, generation: int) -> np.ndarray | None:
        """The calibration queries of ``generation``, or None when it was never calibrated on any."""
        try:
            rows = self._read_rows(self._queries_name(generation))
        except GenerationGone:
            return None
        return rows if len(rows) else None

    def _read_rows(self, name: str) -> np.ndarray:
        """The embeddings of a collection whose ids are row numbers, in row order."""
        ids: list[str] = []
        vectors: list[Any] = []
        for page in self.iter_data(name, ["embeddings"]):
            ids.extend(page["ids"])
            vectors.extend(page["embeddings"])
        if not ids:
            return np.zeros((0, 0), dtype=np.float32)
        order = np.argsort([int(i) for i in ids])
        return np.asarray(vectors, dtype=np.float32)[order]


def pages(get: Any, include: list[str], page_size: int = PAGE) -> Iterator[dict[str, Any]]:
    """Every record a collection's ``get`` reaches (a chromadb ``collection.get``, or the
    store's wrapped one), a page at a time, by offset."""
    offset = 0
    while True:
        page = get(include=include, limit=page_size, offset=offset)
        if not page["ids"]:
            return
        yield page
        offset += len(page["ids"])


def _is_out_of_sync(exc: Exception) -> bool:
    """Chroma's embedded client reading records another process wrote: its per-process cache
    of the vector segment does not know them (``InternalError: ... Error finding id``)."""
    from chromadb.errors import InternalError

    return isinstance(exc, InternalError) and "finding id" in str(exc).lower()
