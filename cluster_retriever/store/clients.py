"""Chroma clients: making one, finding the app's own, and what a database holds.

The only place that reads chromadb's private attributes (``_client``, ``_system``,
``_collection``): adopting an app's collection means reaching the very system its client
runs on, which chromadb offers no public way to do.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import chromadb
from chromadb.api import ClientAPI as ClientAPI  # re-exported: the client type, for the modules above
from chromadb.config import DEFAULT_DATABASE, DEFAULT_TENANT, Settings

from cluster_retriever.errors import IndexNotFoundError

SQLITE = "chroma.sqlite3"


def connect(
    path: str | Path | None = None,
    host: str | None = None,
    port: int = 8000,
    client: ClientAPI | None = None,
    must_exist: bool = False,
) -> ClientAPI:
    """The client a caller's connection parameters name: its own ``client``, a server at
    ``host``, or an embedded folder at ``path`` (``must_exist``: one that holds a store)."""
    if client is not None:
        return client
    if host is None and must_exist:
        require_store_path(path)
    return make_client(path, host, port)


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
    if not (folder / SQLITE).is_file():
        raise IndexNotFoundError(
            f"No cluster index at {folder}: it holds no Chroma store ({SQLITE} is missing). "
            f"Check the path, or build one with ClusterIndex.build(..., path={str(folder)!r})."
        )
    return folder


GENERATION_KINDS = ("nodes", "centroids", "assign", "queries")
"""The collections a generation ``<name>.g<N>.<kind>`` of an index may have (``store.chroma``)."""


def index_names(client: ClientAPI) -> list[str]:
    """The cluster indexes a Chroma database holds (each has a ``<name>.manifest`` collection)."""
    names = (c if isinstance(c, str) else c.name for c in client.list_collections())
    return sorted(name[: -len(".manifest")] for name in names if name.endswith(".manifest"))


def collection_names(client: ClientAPI) -> list[str]:
    """The app's collections in a Chroma database: all but the ones cluster indexes keep."""
    names = (c if isinstance(c, str) else c.name for c in client.list_collections())
    own = re.compile(rf"\.(manifest|g\d+\.({'|'.join(GENERATION_KINDS)}))$")
    return sorted(name for name in names if not own.search(name))


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


def is_missing_collection(exc: Exception) -> bool:
    """chromadb's error for a collection that does not exist (NotFoundError or ValueError by version)."""
    text = f"{type(exc).__name__} {exc}".lower()
    return "notfound" in text or "does not exist" in text
