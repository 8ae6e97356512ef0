"""A local, versioned, memory-mapped copy of the inverted lists, so opening an index does not
read every vector through Chroma's API, and the index's vectors come into memory (as page
cache) only for the clusters its queries touch. (Chroma's embedded client still loads its own
HNSW index of the collection on its first read: docs/benchmarks.md, "Scale".)

Chroma stays the source of truth: a file is used only for the generation, data collection
(by its Chroma id) and dimension it was written for; when the manifest version or the record
count moved since, it is brought in line by id from Chroma (as ``refresh()`` does) and written
again. Every part carries a CRC-32 in the header, checked on open (the metadata when first
read): anything damaged or unreadable is ignored and rebuilt from Chroma, and a query's hits
are checked against Chroma's metadata anyway. Files are written whole under fresh names,
synced, and published by renaming the header last, so a reader never sees half a file.

Layout, in the folder (``<embedded store>/cluster_retriever_lists``, or for a server
``$CLUSTER_RETRIEVER_CACHE/lists/<host>_<port>``):
``<index>.g<N>.<dtype>.json`` (the header) and ``<index>.g<N>.<token>.{vectors,ids,labels,centroids,affinity}.npy``
plus ``.meta.json`` (filterable metadata, read on the first filtered query).
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import numpy as np

from cluster_retriever._cache import cache_root
from cluster_retriever.errors import IndexCorruptedError
from cluster_retriever.scan.lists import InvertedLists
from cluster_retriever.store.chroma import ChromaStore

logger = logging.getLogger(__name__)

FORMAT = 2  # 2: per-part CRC-32 checksums, each row's affinity; metadata keeps "_"-prefixed keys
ARRAYS = ("vectors", "ids", "labels", "centroids", "affinity")
DTYPES = ("float32", "float16")


def lists_file_for(store: ChromaStore, dtype: str = "float32") -> ListsFile | None:
    """The lists file of ``store``'s index: beside an embedded store, in the cache folder for a
    server, none for an in-memory client (its data dies with the process)."""
    location, folder = store.location()
    if folder is None and not store.is_server():
        return None
    if folder is None:
        folder = cache_root() / "lists" / re.sub(r"[^A-Za-z0-9.-]+", "_", location.split("://")[-1])
    else:
        folder = folder / "cluster_retriever_lists"
    return ListsFile(folder, store.name, dtype)


class ListsFile:
    """The file of one index's inverted lists in ``folder``, stored as ``dtype``."""

    def __init__(self, folder: Path, index_name: str, dtype: str = "float32") -> None:
        if dtype not in DTYPES:
            raise ValueError(f"lists_dtype must be one of {DTYPES}, not {dtype!r}.")
        self.folder = folder
        self.index_name = index_name
        self.dtype = dtype

    def _header(self, generation: int) -> Path:
        return self.folder / f"{self.index_name}.g{generation}.{self.dtype}.json"

    def load(
        self,
        generation: int,
        data_uuid: str,
        dimension: int,
        metadata_fallback: Callable[[np.ndarray], list[dict[str, Any]]] | None = None,
        verify: bool = True,
        fence: float | None = None,
    ) -> tuple[InvertedLists, dict[str, Any]] | None:
        """The lists stored for this generation and data collection, memory-mapped, with their
        header (``version``, ``count``); None when there are none or any part is damaged (a
        checksum, shape or cluster id out of line). The metadata is read on the first filtered
        query and checked then; damaged, it comes from ``metadata_fallback(ids)`` (Chroma).
        ``verify=False`` skips the array checksums (a file this process just wrote); ``fence``
        is the manifest's outlier fence."""
        try:
            header = json.loads(self._header(generation).read_text())
            if (header["format"], header["data_uuid"], header["dimension"]) != (FORMAT, data_uuid, dimension):
                return None
            stem = self.folder / header["stem"]
            arrays = {name: np.load(f"{stem}.{name}.npy", mmap_mode="r") for name in ARRAYS}
            count = len(arrays["ids"])
            if arrays["vectors"].shape != (count, dimension) or len(arrays["labels"]) != count or count != header["count"]:
                return None
            damaged = [name for name in ARRAYS if verify and _file_checksum(arrays[name]) != header["checksums"][name]]
            if damaged:
                logger.warning(
                    "lists file of %r generation %d is damaged (%s); reading Chroma", self.index_name, generation, damaged
                )
                return None
            labels = np.asarray(arrays["labels"], dtype=np.int64)
            if count and (labels.min() < 0 or labels.max() >= len(arrays["centroids"])):
                return None
            meta_path = Path(f"{stem}.meta.json")
            if not meta_path.exists():
                return None
            ids = np.char.decode(arrays["ids"], "utf-8").astype(object)  # utf-8 bytes on disk
            expected = header["checksums"]["meta"]

            def metadatas() -> list[dict[str, Any]]:
                try:
                    raw = meta_path.read_bytes()
                    loaded = json.loads(raw) if zlib.crc32(raw) == expected else None
                    if isinstance(loaded, list) and len(loaded) == count:
                        return loaded
                except (OSError, ValueError) as exc:
                    logger.info("metadata of the lists file of %r unreadable (%s)", self.index_name, exc)
                if metadata_fallback is None:
                    raise IndexCorruptedError(
                        f"The lists file's metadata of index {self.index_name!r} is damaged: reopen the index "
                        f"(ClusterIndex.open rebuilds the file from Chroma)."
                    )
                logger.warning("lists file metadata of %r is damaged; reading it from Chroma", self.index_name)
                return metadata_fallback(ids)

            if len(arrays["affinity"]) != count:
                return None
            lists = InvertedLists.from_sorted(
                np.asarray(arrays["centroids"], dtype=np.float32),
                ids,
                arrays["vectors"],
                labels,
                metadatas,
                arrays["affinity"],
                fence,
            )
            return lists, header
        except (OSError, ValueError, KeyError, TypeError) as exc:
            logger.info("lists file of %r generation %d not used (%s); reading Chroma", self.index_name, generation, exc)
            return None

    def save(self, lists: InvertedLists, generation: int, version: int, data_uuid: str) -> None:
        """Write the lists for this generation at this manifest version, each part synced to
        disk before the header that names it is renamed into place; failures only log (the
        file is a cache: the next open reads Chroma)."""
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            stem = f"{self.index_name}.g{generation}.{secrets.token_hex(6)}"
            arrays = {
                "vectors": np.asarray(lists.vectors, dtype=self.dtype),
                "ids": np.char.encode(lists.ids.astype(str), "utf-8") if len(lists) else np.zeros(0, "S1"),
                "labels": lists.labels.astype(np.int32),
                "centroids": lists.centroids,
                "affinity": lists.affinity.astype(np.float32),
            }
            checksums: dict[str, int] = {}
            for name, array in arrays.items():
                with open(self.folder / f"{stem}.{name}.npy", "wb") as out:
                    np.save(out, array, allow_pickle=False)
                    _sync(out)
                checksums[name] = _checksum(array)
            meta = json.dumps(list(lists.metadatas), default=str).encode()
            with open(self.folder / f"{stem}.meta.json", "wb") as out:
                out.write(meta)
                _sync(out)
            checksums["meta"] = zlib.crc32(meta)
            header = {
                "format": FORMAT,
                "stem": stem,
                "generation": generation,
                "version": version,
                "count": len(lists),
                "data_uuid": data_uuid,
                "dimension": lists.dim,
                "dtype": self.dtype,
                "checksums": checksums,
            }
            scratch = self.folder / f"{stem}.header.tmp"
            with open(scratch, "w") as out:
                out.write(json.dumps(header))
                _sync(out)
            os.replace(scratch, self._header(generation))
            directory = os.open(self.folder, os.O_RDONLY)
            try:
                os.fsync(directory)  # the rename itself survives a crash
            finally:
                os.close(directory)
            self.prune(generation)
        except OSError as exc:
            logger.warning("could not write the lists file of %r in %s: %s", self.index_name, self.folder, exc)

    def prune(self, generation: int | None) -> None:
        """Delete this index's files except those the headers of ``generation`` name (every
        dtype's); None deletes them all. A process still mapping a deleted file keeps reading it."""
        if not self.folder.exists():
            return
        live: set[str] = set()
        headers = re.compile(re.escape(self.index_name) + r"\.g(\d+)\.(" + "|".join(DTYPES) + r")\.json")
        for header in self.folder.iterdir():
            named = headers.fullmatch(header.name)
            if not named:
                continue
            try:
                stem = json.loads(header.read_text())["stem"]
            except (OSError, ValueError, KeyError, TypeError):
                stem = None
            if stem and generation is not None and int(named.group(1)) == generation:
                live.add(stem)
            else:
                header.unlink(missing_ok=True)
        pattern = re.compile(re.escape(self.index_name) + r"\.g\d+\.[0-9a-f]{12}\.")
        for path in self.folder.iterdir():
            if pattern.match(path.name) and not any(path.name.startswith(stem + ".") for stem in live):
                path.unlink(missing_ok=True)


def _checksum(array: np.ndarray) -> int:
    """CRC-32 of an array's bytes (2.5 GB/s here: 0.6 s for the 1.5 GB of vectors at 1M x 384)."""
    return zlib.crc32(np.ascontiguousarray(array).view(np.uint8).data)


def _file_checksum(array: np.ndarray) -> int:
    """``_checksum`` of a mapped array, computed from reads of its file rather than through the
    mapping: a process's resident memory counts the mapped pages it touched, and the open's
    check touched every row (at 1M, 1,542 MB mapped before the first query, where queries on
    the float rows touch only their probed clusters' pages)."""
    if not isinstance(array, np.memmap) or array.filename is None:  # numpy loads an empty array unmapped
        return _checksum(array)
    crc, left, chunk = 0, array.nbytes, bytearray(1 << 24)
    with Path(str(array.filename)).open("rb", buffering=0) as f:
        f.seek(int(array.offset))
        while left:
            read = f.readinto(memoryview(chunk)[: min(left, len(chunk))])
            if not read:
                raise ValueError(f"{array.filename} ends {left} bytes early")
            crc = zlib.crc32(memoryview(chunk)[:read], crc)
            left -= read
    return crc


def _sync(out: IO[Any]) -> None:
    out.flush()
    os.fsync(out.fileno())
