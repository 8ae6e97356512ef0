"""Chroma storage, the one place that imports chromadb.

A named index is a data collection and three kinds of its own collections in one Chroma
database:

- the data: the app's own collection when the index adopted one (zero copy: documents and
  embeddings stay there, the one source of truth), or ``<name>.g<N>.nodes`` when the index
  was built from documents; either way in ``ChromaVectorStore``'s record format;
- ``<name>.g<N>.centroids``: generation N's unit centroids;
- ``<name>.g<N>.assign``: generation N's cluster of each record (id -> ``cluster_id``);
- ``<name>.manifest``: an append-only log of manifest versions, one record per write.

A re-clustering writes a new generation of centroids and assignments only; the data is
never copied.

Every write commits the next manifest version by inserting the record ``v<version+1>``.
Chroma keeps the first record written under an id and ignores later ones, so the insert is a
compare-and-swap: of two writers that read the same version, exactly one commits and the
other gets ``ConcurrentWriteError``. A build writes a new generation and only then commits a
manifest that names it, so a crash in the middle leaves the previous index readable.
"""

from __future__ import annotations

import ctypes
import json
import re
import uuid
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime, timezone
from functools import partial
from pathlib import Path
from typing import Any

import chromadb
import numpy as np
from chromadb.api import ClientAPI as ClientAPI  # re-exported: the client type, for the modules above
from chromadb.config import DEFAULT_DATABASE, DEFAULT_TENANT, Settings
from llama_index.core.schema import BaseNode, MetadataMode
from llama_index.core.vector_stores.types import MetadataFilters
from llama_index.core.vector_stores.utils import node_to_metadata_dict
from pydantic import BaseModel, Field, ValidationError, field_validator

from cluster_retriever.errors import ConcurrentWriteError, IndexCorruptedError, IndexNotFoundError, StoreOutOfSyncError

FORMAT_VERSION = 3
CLUSTER_ID_KEY = "cluster_id"
VERSION_KEY = "version"  # of an assignment: the manifest version that wrote it
_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{1,100}[A-Za-z0-9]$")
_PAGE = 5000
_KEEP_VERSIONS = 32  # manifest records kept; older ones are pruned after a commit
_SQLITE = "chroma.sqlite3"


class GenerationGone(Exception):
    """A generation's collection no longer exists (another writer re-clustered and dropped it)."""


def make_client(path: str | Path | None = None, host: str | None = None, port: int = 8000) -> ClientAPI:
    """An embedded ``PersistentClient`` at ``path`` (default ``./chroma``), or an ``HttpClient``
    to a Chroma server when ``host`` is given. Telemetry is off, except on a folder this process
    already opened with other settings (the app's own client, made with Chroma's defaults):
    Chroma allows one set of settings per folder and process, so that client's are reused."""
    if host is not None:
        return chromadb.HttpClient(host=host, port=port, settings=Settings(anonymized_telemetry=False))
    folder = str(path or "./chroma")
    if Path(folder).expanduser().exists() and not Path(folder).expanduser().is_dir():
        raise NotADirectoryError(
            f"{folder} is a file, not a folder: give the folder an embedded Chroma store lives in (or will)."
        )
    running = _running_system(folder)
    settings = running.settings if running is not None else Settings(anonymized_telemetry=False)
    return chromadb.PersistentClient(path=folder, settings=settings)


def _running_system(folder: str) -> Any:
    """The Chroma system this process already runs for an embedded folder, if any (Chroma
    keys them by the path as given, and refuses a second one with other settings)."""
    from chromadb.api.shared_system_client import SharedSystemClient

    return SharedSystemClient._identifier_to_system.get(folder)


def require_store_path(path: str | Path | None) -> Path:
    """The folder of an existing embedded store; opening never creates one."""
    folder = Path(path or "./chroma").expanduser()
    if not (folder / _SQLITE).is_file():
        raise IndexNotFoundError(
            f"No cluster index at {folder}: it holds no Chroma store ({_SQLITE} is missing). "
            f"Check the path, or build one with ClusterIndex.build(..., path={str(folder)!r})."
        )
    return folder


class Manifest(BaseModel):
    """What an index was built with, and which generation is live; one record per version."""

    format_version: int = Field(FORMAT_VERSION, description="Storage layout version.")
    embed_model: str = Field(description="Id of the embedding model the documents were embedded with.")
    dimension: int = Field(description="Embedding dimension.")
    n_clusters: int = Field(description="Number of KMeans clusters.")
    generation: int = Field(description="The live generation of centroids and assignments.")
    data_collection: str = Field(description="The Chroma collection holding the documents and embeddings.")
    owns_data: bool = Field(description="False when the data collection is the app's own (adopted, zero copy).")
    clustered_count: int = Field(0, description="Records when the clusters were last fitted.")
    calibration: dict[str, dict[str, float]] = Field(
        default_factory=dict, description="Probe budget per depth and recall target, measured on this index's data."
    )
    version: int = Field(0, description="Bumped by every committed write (add, delete, build, recluster).")
    random_state: int = Field(0, description="KMeans seed.")
    outlier_fence: float | None = Field(
        None, description="Affinity to its centroid below which a record is always scanned (None: from the lists)."
    )
    updated_at: str = Field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))

    @field_validator("calibration", mode="before")
    @classmethod
    def _parse_calibration(cls, value: Any) -> Any:
        return json.loads(value) if isinstance(value, str) else value  # Chroma metadata holds only scalars

    def to_record(self) -> dict[str, Any]:
        fields = {key: value for key, value in self.model_dump().items() if value is not None}  # Chroma holds no None
        return {**fields, "calibration": json.dumps(self.calibration)}

    def bumped(self, **changes: Any) -> Manifest:
        now = datetime.now(timezone.utc).isoformat(timespec="seconds")
        return self.model_copy(update={**changes, "version": self.version + 1, "updated_at": now})


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
        self._open: dict[str, Any] = {}

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

    def nodes_name(self, generation: int) -> str:
        return f"{self.name}.g{generation}.nodes"

    def _assign_name(self, generation: int) -> str:
        return f"{self.name}.g{generation}.assign"

    def _centroids_name(self, generation: int) -> str:
        return f"{self.name}.g{generation}.centroids"

    @property
    def _manifest_name(self) -> str:
        return f"{self.name}.manifest"

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
            if _is_missing_collection(exc):
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

    # -- manifest -------------------------------------------------------------------------
    def read_manifest(self) -> Manifest | None:
        """The newest committed manifest, or None when there is no index of this name."""
        try:
            collection: Any = self.client.get_collection(self._manifest_name, embedding_function=None)
            found: Any = collection.get(include=["metadatas"])
        except Exception as exc:
            if _is_missing_collection(exc):
                return None
            raise
        versions = [i for i, record_id in enumerate(found["ids"]) if _version_of(record_id) >= 0]
        try:
            if versions:
                newest = max(versions, key=lambda i: _version_of(found["ids"][i]))
                return Manifest.model_validate(found["metadatas"][newest])
            if collection.metadata:  # format 1 kept one manifest in the collection's metadata
                legacy = dict(collection.metadata)
                legacy.pop("doc_count", None)
                return Manifest.model_validate(legacy)
            if found["ids"]:  # generation claims only: a first build still running, or killed
                return None
        except ValidationError as exc:
            raise IndexCorruptedError(
                f"The manifest of index {self.name!r} is damaged or from an older cluster-retriever "
                f"({exc.error_count()} bad fields). Rebuild the index with ClusterIndex.build(...) or "
                f"ClusterIndex.from_vector_store(...)."
            ) from exc
        raise IndexCorruptedError(
            f"The manifest collection of index {self.name!r} is empty. Rebuild the index with ClusterIndex.build(...)."
        )

    def require_manifest(self) -> Manifest:
        manifest = self.read_manifest()
        if manifest is None:
            names = index_names(self.client)
            held = f"it holds {names}: pass one as name (--name)" if names else "it holds none"
            raise IndexNotFoundError(
                f"No cluster index named {self.name!r} in this Chroma store ({held}). Build one with "
                f"ClusterIndex.build(...) or `cluster-retriever build`, adopt a collection with `cluster-retriever adopt` "
                f"(named <collection>-clusters), or check the path/host."
            )
        if manifest.format_version > FORMAT_VERSION:
            raise IndexCorruptedError(
                f"Index {self.name!r} has storage format {manifest.format_version}, newer than this "
                f"library understands ({FORMAT_VERSION}): upgrade cluster-retriever."
            )
        return manifest

    def commit_manifest(self, manifest: Manifest) -> None:
        """Insert ``manifest`` as version ``manifest.version``; raise ``ConcurrentWriteError`` if
        another writer committed that version first."""
        collection: Any = self.client.get_or_create_collection(self._manifest_name, embedding_function=None)
        token = uuid.uuid4().hex
        record_id = _version_id(manifest.version)
        collection.add(ids=[record_id], embeddings=[[0.0]], metadatas=[{**manifest.to_record(), "writer": token}])
        stored = collection.get(ids=[record_id], include=["metadatas"])["metadatas"]
        if not stored or stored[0].get("writer") != token:
            raise ConcurrentWriteError(
                f"Another writer committed version {manifest.version} of index {self.name!r} first; "
                f"this write was not applied. Retry it (the index reloads the new state first)."
            )
        stale = [_version_id(v) for v in range(max(0, manifest.version - 4 * _KEEP_VERSIONS), manifest.version - _KEEP_VERSIONS)]
        if stale and manifest.version % _KEEP_VERSIONS == 0:
            collection.delete(ids=stale)

    # -- generations ----------------------------------------------------------------------
    def generations(self) -> dict[int, set[str]]:
        """The collections of each generation that exist."""
        pattern = re.compile(rf"^{re.escape(self.name)}\.g(\d+)\.(nodes|centroids|assign)$")
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
        """A generation number no other writer will use: the next free one, claimed by
        inserting ``g<N>`` into the manifest collection (first writer wins, as for versions)."""
        manifest = self.read_manifest()
        collection: Any = self.client.get_or_create_collection(self._manifest_name, embedding_function=None)
        generation = max(set(self.generations()) | {manifest.generation if manifest else 0}) + 1
        token = uuid.uuid4().hex
        while True:
            claim = f"g{generation:012d}"
            collection.add(ids=[claim], embeddings=[[0.0]], metadatas=[{"writer": token}])
            stored = collection.get(ids=[claim], include=["metadatas"])["metadatas"]
            if stored and stored[0].get("writer") == token:
                return generation
            generation += 1

    def drop_generation(self, generation: int, keep: str | None) -> None:
        """Drop a generation's collections, except ``keep`` (the live data collection)."""
        for name in (self.nodes_name(generation), self._centroids_name(generation), self._assign_name(generation)):
            if name == keep:
                continue
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
        """Upsert records into the data collection ``data``, in batches Chroma accepts."""
        if create:
            self._collection(data, create=True)
        step = self.client.get_max_batch_size()
        for start in range(0, len(ids), step):
            end = start + step

            def upsert(collection: Any, start: int = start, end: int = end) -> None:
                collection.upsert(
                    ids=list(ids[start:end]),
                    embeddings=vectors[start:end],
                    documents=list(documents[start:end]),
                    metadatas=list(metadatas[start:end]),
                )

            self._call(data, upsert)
        release_freed_heap()

    def iter_data(self, data: str, include: list[str]) -> Iterator[dict[str, Any]]:
        """Pages of the data collection with the fields in ``include``."""
        offset = 0
        while True:
            page: dict[str, Any] = self._call(data, partial(_get_page, include=include, offset=offset))
            if not page["ids"]:
                return
            yield page
            offset += len(page["ids"])

    def iter_records(self, data: str) -> Iterator[tuple[str, str, dict[str, Any]]]:
        """(id, text, metadata) of every record."""
        for page in self.iter_data(data, ["documents", "metadatas"]):
            for doc_id, text, metadata in zip(page["ids"], page["documents"], page["metadatas"], strict=True):
                yield doc_id, text or "", metadata or {}

    def fetch(self, data: str, ids: Sequence[str], documents: bool = True) -> dict[str, tuple[str, dict[str, Any]]]:
        """Documents (``""`` when not asked for) and metadata by id, in one read (Chroma does not
        keep the request order)."""
        include = ["documents", "metadatas"] if documents else ["metadatas"]
        found = self._call(data, lambda c: c.get(ids=list(ids), include=include))
        texts = found["documents"] if documents else [""] * len(found["ids"])
        return {i: (d or "", m or {}) for i, d, m in zip(found["ids"], texts, found["metadatas"], strict=True)}

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

    def count(self, data: str) -> int:
        return int(self._call(data, lambda c: c.count()))

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
        step = self.client.get_max_batch_size()
        for start in range(0, len(ids), step):
            chunk = list(ids[start : start + step])
            chunk_labels = [int(c) for c in labels[start : start + step]]

            def upsert(collection: Any, chunk: list[str] = chunk, chunk_labels: list[int] = chunk_labels) -> None:
                collection.upsert(
                    ids=chunk,
                    embeddings=[[float(c)] for c in chunk_labels],
                    metadatas=[{CLUSTER_ID_KEY: c, VERSION_KEY: version} for c in chunk_labels],
                )

            self._call(name, upsert)

    def changed_since(self, generation: int, version: int) -> list[str]:
        """Ids whose assignment was written by a manifest version after ``version`` (records
        the library added or rewrote since; deletions show as missing ids instead)."""
        name = self._assign_name(generation)
        found = self._call(name, lambda c: c.get(where={VERSION_KEY: {"$gt": version}}, include=[]))
        return list(found["ids"])

    def delete_assignments(self, generation: int, ids: Sequence[str]) -> None:
        self._call(self._assign_name(generation), lambda c: c.delete(ids=list(ids)))

    def read_assignments(self, generation: int) -> dict[str, int]:
        name = self._assign_name(generation)
        found: dict[str, int] = {}
        offset = 0
        while True:
            page: dict[str, Any] = self._call(name, partial(_get_page, include=["metadatas"], offset=offset))
            if not page["ids"]:
                return found
            for doc_id, metadata in zip(page["ids"], page["metadatas"], strict=True):
                found[doc_id] = int((metadata or {}).get(CLUSTER_ID_KEY, -1))
            offset += len(page["ids"])

    # -- centroids ------------------------------------------------------------------------
    def write_centroids(self, generation: int, centroids: np.ndarray) -> None:
        collection = self._collection(self._centroids_name(generation), create=True)
        step = self.client.get_max_batch_size()  # k passes Chroma's batch limit near 300k documents
        for start in range(0, len(centroids), step):
            clusters = range(start, min(start + step, len(centroids)))
            collection.upsert(
                ids=[str(c) for c in clusters],
                embeddings=centroids[start : start + step],
                metadatas=[{CLUSTER_ID_KEY: c} for c in clusters],
            )

    def read_centroids(self, generation: int) -> np.ndarray:
        name = self._centroids_name(generation)
        ids: list[str] = []
        vectors: list[Any] = []
        offset = 0
        while True:
            found: dict[str, Any] = self._call(name, partial(_get_page, include=["embeddings"], offset=offset))
            if not found["ids"]:
                break
            ids.extend(found["ids"])
            vectors.extend(found["embeddings"])
            offset += len(found["ids"])
        if not ids:
            return np.zeros((0, 0), dtype=np.float32)
        order = np.argsort([int(i) for i in ids])
        return np.asarray(vectors, dtype=np.float32)[order]


def index_names(client: ClientAPI) -> list[str]:
    """The cluster indexes a Chroma database holds (each has a ``<name>.manifest`` collection)."""
    names = (c if isinstance(c, str) else c.name for c in client.list_collections())
    return sorted(name[: -len(".manifest")] for name in names if name.endswith(".manifest"))


def collection_names(client: ClientAPI) -> list[str]:
    """The app's collections in a Chroma database: all but the ones cluster indexes keep."""
    names = (c if isinstance(c, str) else c.name for c in client.list_collections())
    own = re.compile(r"\.(manifest|g\d+\.(nodes|centroids|assign))$")
    return sorted(name for name in names if not own.search(name))


def _get_page(collection: Any, include: list[str], offset: int) -> Any:
    return collection.get(include=include, limit=_PAGE, offset=offset)


def _version_id(version: int) -> str:
    return f"v{version:012d}"


def _version_of(record_id: str) -> int:
    """The version of a manifest record ``v<N>``; -1 for anything else (generation claims)."""
    return int(record_id[1:]) if record_id.startswith("v") and record_id[1:].isdigit() else -1


def _is_out_of_sync(exc: Exception) -> bool:
    """Chroma's embedded client reading records another process wrote: its per-process cache
    of the vector segment does not know them (``InternalError: ... Error finding id``)."""
    from chromadb.errors import InternalError

    return isinstance(exc, InternalError) and "finding id" in str(exc).lower()


def _is_missing_collection(exc: Exception) -> bool:
    text = f"{type(exc).__name__} {exc}".lower()
    return "notfound" in text or "does not exist" in text


def _malloc_trim() -> Callable[[int], int] | None:
    try:
        trim: Callable[[int], int] = ctypes.CDLL("libc.so.6").malloc_trim
        return trim
    except (OSError, AttributeError):  # not glibc
        return None


_MALLOC_TRIM = _malloc_trim()


def release_freed_heap() -> None:
    """Give freed heap pages back to the OS (glibc only). An embedded Chroma write copies
    each document through Python and Rust and indexes its words; glibc keeps the freed
    pages, so without this a long build's resident memory grows with the corpus text
    (measured: 10k documents of 8.6 kB peaked 110 MB higher than of 1 kB)."""
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


def pages(collection: Any, include: list[str], page_size: int = _PAGE) -> Iterator[dict[str, Any]]:
    """Every record of a Chroma collection (one the index does not own), a page at a time."""
    offset = 0
    while True:
        page = collection.get(include=include, limit=page_size, offset=offset)
        if not page["ids"]:
            return
        yield page
        offset += len(page["ids"])


def chroma_where(filters: MetadataFilters) -> dict[str, Any]:
    """LlamaIndex filters as a Chroma ``where`` clause, translated as ``ChromaVectorStore`` does."""
    from llama_index.vector_stores.chroma.base import _to_chroma_filter

    where: dict[str, Any] = _to_chroma_filter(filters)
    return where


def node_record(node: BaseNode) -> tuple[str, str, dict[str, Any]]:
    """(id, text, metadata) of a node in ``ChromaVectorStore``'s record format."""
    metadata = node_to_metadata_dict(node, remove_text=True, flat_metadata=True)
    cleaned = {key: ("" if value is None else value) for key, value in metadata.items()}
    return node.node_id, node.get_content(metadata_mode=MetadataMode.NONE), cleaned


def write_nodes(collection: Any, nodes: Sequence[BaseNode]) -> None:
    """Write embedded nodes to a collection as ``ChromaVectorStore.add`` would."""
    records = [node_record(node) for node in nodes]
    collection.upsert(
        ids=[r[0] for r in records],
        documents=[r[1] for r in records],
        metadatas=[r[2] for r in records],
        embeddings=[node.get_embedding() for node in nodes],
    )


def client_of(collection: Any) -> ClientAPI:
    """A client on the very Chroma system a collection came from (the app's own client, with its
    settings, tenant and database): persistent, in-memory or HTTP alike, and never a second
    embedded system on the same folder, which Chroma refuses or lets go out of sync."""
    from chromadb.api.client import Client

    server = getattr(collection, "_client", None)
    system = getattr(server, "_system", None)
    if system is None:
        raise TypeError(
            f"{type(collection).__name__} is not a chromadb collection with a client: pass a ChromaVectorStore, "
            f"a VectorStoreIndex on one, or a chromadb collection."
        )
    tenant = getattr(collection, "tenant", None) or DEFAULT_TENANT
    database = getattr(collection, "database", None) or DEFAULT_DATABASE
    return Client.from_system(system, tenant=tenant, database=database)


def is_in_memory(client: ClientAPI) -> bool:
    """An in-memory (ephemeral) client: its data dies with the process."""
    settings = client.get_settings()
    return not settings.is_persistent and not settings.chroma_server_host


def source_collection(vector_store: Any) -> Any:
    """The chromadb collection behind a ChromaVectorStore, a VectorStoreIndex, or a collection."""
    if hasattr(vector_store, "vector_store"):  # VectorStoreIndex
        vector_store = vector_store.vector_store
    collection = getattr(vector_store, "_collection", vector_store)
    if not all(hasattr(collection, attr) for attr in ("get", "count", "name")):
        raise TypeError(
            "from_vector_store needs a ChromaVectorStore, a VectorStoreIndex on one, or a chromadb collection; "
            f"got {type(vector_store).__name__}."
        )
    return collection
