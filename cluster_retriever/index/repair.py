"""Repairing what killed builds leave behind, without an embedding model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cluster_retriever.store.chroma import ChromaStore
from cluster_retriever.store.clients import ClientAPI, connect
from cluster_retriever.store.lists_file import lists_file_for
from cluster_retriever.store.locking import WriterLock

DEFAULT_NAME = "cluster_index"


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
    store = ChromaStore(connect(path, host, port, client, must_exist=True), name)
    location, folder = store.location()
    with WriterLock.for_index(location, name, folder).hold(lock_timeout_s):
        manifest = store.manifests.require()
        store.check_generation(manifest)
        orphans = store.orphans(manifest)
        for orphan in orphans:
            store.drop_generation(orphan, keep=manifest.data_collection)
        lists_file = lists_file_for(store)
        if lists_file is not None:
            lists_file.prune(manifest.generation)  # files of dropped generations
    return {"generation": manifest.generation, "orphan_generations_dropped": orphans}
