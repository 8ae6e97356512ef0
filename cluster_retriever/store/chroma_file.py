"""Records read straight from an embedded Chroma's own SQLite file, for the hits of a query.

Why: Chroma's ``collection.get`` of ten records by id costs 0.66 ms (300k records, p50, warm;
0.50 ms of it with nothing included), nearly all inside its Rust bindings, while the SQLite
query that answers it costs 0.10 ms: the read of a query's hits was half of the default
path (docs/benchmarks.md, "Scale").

Never less fresh than Chroma: each read first checks that the collection's metadata segment
has applied every entry of Chroma's write-ahead log for it (``max_seq_id`` against
``embeddings_queue``); Chroma 1.5 applies each write to that segment before acknowledging it,
so this holds after every write, by any process.

Never in Chroma's way: Chroma links its own copy of SQLite, and POSIX file locks belong to
the process, so a second copy's lock calls in the same process would change Chroma's locks,
and closing its descriptor would drop them (sqlite.org/howtocorrupt.html, 2.2.1). So this
module never locks (``nolock=1``, read-only) and never closes what it opens: one connection
per concurrent reader and one descriptor per file, kept for the life of the process. Without
locks, a read is kept only when no write overlapped it: the file's change counter is the
same before and after, and no rollback journal existed at either moment (a commit writes the
file only while its journal exists, and bumps the counter). When a check fails, the file's
layout or journal mode is not the one known here, the records carry list-valued metadata, or
SQLite reports an error, ``records`` answers ``None`` and the caller reads through Chroma.
Only embedded persistent clients on POSIX systems read the file; in-memory and HTTP clients,
and Windows, read through Chroma.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

from cluster_retriever.store.clients import SQLITE

logger = logging.getLogger(__name__)

DOCUMENT_KEY = "chroma:document"
_CHUNK = 500  # ids per statement, well under SQLite's bound parameters

# The layout read here (Chroma 1.x's sqlite metadata segment and write-ahead log).
_COLUMNS = {
    "segments": {"id", "scope", "collection"},
    "embeddings": {"id", "segment_id", "embedding_id"},
    "embedding_metadata": {"id", "key", "string_value", "int_value", "float_value", "bool_value"},
    "max_seq_id": {"segment_id", "seq_id"},
    "embeddings_queue": {"seq_id", "topic"},
}
_ARRAYS = "embedding_metadata_array"

Records = dict[str, tuple[str, dict[str, Any]]]
_T = TypeVar("_T")


class _Segment(NamedTuple):
    """The collection's metadata segment, current as of one state of the file."""

    id: str
    arrays: bool  # whether any record in the file has list-valued metadata


class ChromaFile:
    """Direct reads of one collection's records from ``<folder>/chroma.sqlite3``."""

    def __init__(self, path: Path, collection_id: str, arrays: bool) -> None:
        self.path = path
        self.collection_id = collection_id
        self._arrays = arrays
        self._counted: tuple[tuple[int, bytes], int] | None = None  # ((inode, change counter), count)
        self._segment: tuple[tuple[int, bytes], _Segment] | None = None  # the last state vouched for

    @classmethod
    def open(cls, folder: Path | None, collection_id: str) -> ChromaFile | None:
        """The reader of collection ``collection_id`` in an embedded Chroma's ``folder``, or
        None where there is no file or its layout is not the one known here."""
        if os.name != "posix" or folder is None or not (folder / SQLITE).is_file():
            return None  # the checks here are POSIX's (locks per process, ``pread``)
        path = sqlite_file(folder)
        try:
            file = _File.of(path)
            with file.connection() as connection:
                tables = {
                    name: {row[1] for row in connection.execute(f"PRAGMA table_info({name})")} for name in [*_COLUMNS, _ARRAYS]
                }
        except (sqlite3.Error, OSError) as exc:
            logger.debug("Chroma's file %s is not readable directly (%s): reading through Chroma.", path, exc)
            return None
        if any(not columns <= tables[name] for name, columns in _COLUMNS.items()):
            logger.debug("Chroma's file %s has another layout: reading through Chroma.", path)
            return None
        return cls(path, collection_id, arrays=bool(tables[_ARRAYS]))

    def records(self, ids: Sequence[str], documents: bool = True) -> Records | None:
        """Document (``""`` when absent or not asked for) and metadata of each id found, as
        ``collection.get`` gives them; None when this read cannot vouch for being current."""
        return self._vouched(lambda connection, segment: self._records(connection, segment, list(ids), documents))

    def everything(self, documents: bool, metadatas: bool) -> dict[str, list[Any]] | None:
        """Every record's id, with its document and/or metadata, in Chroma's order: what
        ``collection.get(include=...)`` gives, in one page (None: ask Chroma). At 100k: ids
        0.11 s against Chroma's 0.53 s, ids and metadata (7 keys) 1.1-1.3 s against 2.8 s; and
        Chroma's first get in a process also loads the collection's vector index."""
        return self._vouched(lambda connection, segment: self._everything(connection, segment, documents, metadatas))

    def count(self) -> int | None:
        """The number of records, as ``collection.count()`` gives it (None: ask Chroma). Chroma's
        own first count in a process loads the collection's vector index: at 1M, 2.3 s and
        +1,981 MB; this reads the segment's index of ids (37 ms), and only when the file changed
        since the last count (its change counter moved): a query's staleness check is then one
        4-byte read."""
        counted = self._counted
        if counted is not None and counted[0] == file_state(self.path):
            return counted[1]
        statement = "SELECT count(*) FROM embeddings WHERE segment_id = ?"
        read = self._vouched_at(lambda connection, segment: int(connection.execute(statement, (segment.id,)).fetchone()[0]))
        if read is None:
            return None
        self._counted = read
        return read[1]

    def _vouched(self, read: Callable[[sqlite3.Connection, _Segment], _T | None]) -> _T | None:
        """``_vouched_at``'s value, without the state it was read at."""
        vouched = self._vouched_at(read)
        return None if vouched is None else vouched[1]

    def _vouched_at(self, read: Callable[[sqlite3.Connection, _Segment], _T | None]) -> tuple[tuple[int, bytes], _T] | None:
        """``read(connection, segment)`` in one read transaction, kept only when the segment is
        current and no write overlapped it (see the module's docstring); with the file's inode
        and change counter it was read at. The segment's checks are made once per state of the
        file (0.04 of a ten-record read's 0.20 ms at 100k)."""
        try:
            file = _File.of(self.path)
            before = file.version()
            if before is None:
                return None
            state = (file.inode, before)
            known = self._segment
            with file.connection() as connection:
                connection.execute("BEGIN")
                try:
                    segment = known[1] if known is not None and known[0] == state else self._current_segment(connection)
                    found = None if segment is None else read(connection, segment)
                finally:
                    connection.execute("COMMIT")
            if segment is None or file.version() != before:
                return None
            self._segment = (state, segment)
            return None if found is None else (state, found)
        except (sqlite3.Error, OSError) as exc:  # a hot journal (a writer committing), a page torn by one, the file gone
            logger.debug("Direct read of %s failed (%s): reading through Chroma.", self.path, exc)
            return None

    def _current_segment(self, connection: sqlite3.Connection) -> _Segment | None:
        """The collection's metadata segment, when it has applied every write Chroma logged for it."""
        segment = connection.execute(
            "SELECT s.id, m.seq_id FROM segments s LEFT JOIN max_seq_id m ON m.segment_id = s.id "
            "WHERE s.collection = ? AND s.scope = 'METADATA'",
            (self.collection_id,),
        ).fetchall()
        if len(segment) != 1 or not isinstance(segment[0][1], int):
            return None  # the collection is gone, never written, or stores its watermark otherwise
        segment_id, applied = segment[0]
        behind = connection.execute(
            "SELECT 1 FROM embeddings_queue WHERE seq_id > ? AND substr(topic, -36) = ? LIMIT 1",
            (applied, self.collection_id),
        ).fetchone()
        if behind is not None:
            return None  # Chroma's get merges the log
        arrays = self._arrays and connection.execute(f"SELECT 1 FROM {_ARRAYS} LIMIT 1").fetchone() is not None
        return _Segment(str(segment_id), arrays)

    def _records(self, connection: sqlite3.Connection, segment: _Segment, ids: list[str], documents: bool) -> Records | None:
        skip = "" if documents else f" AND m.key != '{DOCUMENT_KEY}'"
        found: dict[str, tuple[str | None, dict[str, Any]]] = {}
        for start in range(0, len(ids), _CHUNK):
            chunk = ids[start : start + _CHUNK]
            marks = ",".join("?" * len(chunk))
            if self._has_arrays(connection, segment, f" AND e.embedding_id IN ({marks})", *chunk):
                return None
            rows = connection.execute(
                f"SELECT {_FIELDS} FROM embeddings e LEFT JOIN embedding_metadata m ON m.id = e.id{skip} "
                f"WHERE e.segment_id = ? AND e.embedding_id IN ({marks})",
                (segment.id, *chunk),
            )
            _decode(rows, found)
        return {doc_id: (text or "", metadata) for doc_id, (text, metadata) in found.items()}

    def _everything(
        self, connection: sqlite3.Connection, segment: _Segment, documents: bool, metadatas: bool
    ) -> dict[str, list[Any]] | None:
        if self._has_arrays(connection, segment, ""):
            return None
        page: dict[str, list[Any]] = {
            "ids": [row[0] for row in connection.execute(_ALL_IDS, (segment.id,))]  # Chroma's order: by row
        }
        if not documents and not metadatas:
            return page
        keys = "" if documents and metadatas else f" AND m.key {'=' if documents else '!='} '{DOCUMENT_KEY}'"
        found: dict[str, tuple[str | None, dict[str, Any]]] = {}
        _decode(connection.execute(_ALL_FIELDS + keys, (segment.id,)), found)
        fields = [found.get(doc_id, (None, {})) for doc_id in page["ids"]]
        if documents:
            page["documents"] = [text for text, _ in fields]
        if metadatas:
            page["metadatas"] = [metadata or None for _, metadata in fields]
        return page

    def _has_arrays(self, connection: sqlite3.Connection, segment: _Segment, among: str, *ids: str) -> bool:
        """Whether records of the segment (those ``among`` names, a SQL condition on ``ids``) carry
        list-valued metadata, whose order is Chroma's to give."""
        return segment.arrays and (
            connection.execute(
                f"SELECT 1 FROM embeddings e JOIN {_ARRAYS} a ON a.id = e.id WHERE e.segment_id = ?{among} LIMIT 1",
                (segment.id, *ids),
            ).fetchone()
            is not None
        )


_ALL_IDS = "SELECT embedding_id FROM embeddings WHERE segment_id = ? ORDER BY id"
_FIELDS = "e.embedding_id, m.key, m.string_value, m.int_value, m.float_value, m.bool_value"  # as _decode reads them
_ALL_FIELDS = f"SELECT {_FIELDS} FROM embeddings e JOIN embedding_metadata m ON m.id = e.id WHERE e.segment_id = ?"


def _decode(rows: Iterable[tuple[Any, ...]], found: dict[str, tuple[str | None, dict[str, Any]]]) -> None:
    """Rows of (id, key, string, int, float, bool) into ``found``'s (document, metadata) by id
    (document None: the record has none)."""
    for doc_id, key, text, integer, real, boolean in rows:
        _, metadata = found.setdefault(doc_id, (None, {}))
        if key is None:
            continue
        if key == DOCUMENT_KEY:
            found[doc_id] = (text, metadata)
        elif text is not None:
            metadata[key] = text
        elif integer is not None:
            metadata[key] = integer
        elif real is not None:
            metadata[key] = real
        elif boolean is not None:
            metadata[key] = bool(boolean)


def sqlite_file(folder: Path) -> Path:
    """The SQLite file of an embedded Chroma's ``folder``, its path resolved."""
    return (folder / SQLITE).resolve()


def file_state(path: Path) -> tuple[int, bytes] | None:
    """(inode, change counter) of the SQLite file at ``path``: the same while nothing in the file
    changed; None where that cannot be told (no such file, a write in progress, WAL mode,
    not POSIX)."""
    if os.name != "posix":
        return None
    try:
        file = _File.of(path)
        version = file.version()
    except OSError:
        return None
    return None if version is None else (file.inode, version)


class _File:
    """One Chroma file's connections and the descriptor that watches its change counter, per
    process; never closed (see the module's docstring)."""

    _open: dict[tuple[int, Path], _File] = {}
    _replaced: list[_File] = []  # files deleted and made again at the same path: kept open too
    _lock = threading.Lock()

    def __init__(self, path: Path) -> None:
        self.path = path
        self._journal = Path(f"{path}-journal")
        self._wal = Path(f"{path}-wal")
        self._descriptor = os.open(path, os.O_RDONLY)
        self.inode = os.fstat(self._descriptor).st_ino
        self._connections: list[sqlite3.Connection] = []
        self._idle: list[sqlite3.Connection] = []
        self._idle_lock = threading.Lock()

    @classmethod
    def of(cls, path: Path) -> _File:
        """This process's reader of the file now at ``path`` (a forked child, or a file made
        again at the same path, gets a new one)."""
        key = (os.getpid(), path)
        file = cls._open.get(key)
        if file is not None and file.inode == os.stat(path).st_ino:
            return file
        with cls._lock:  # checked again: another thread may have opened it meanwhile
            file = cls._open.get(key)
            if file is not None and file.inode == os.stat(path).st_ino:
                return file
            if file is not None:
                cls._replaced.append(file)
            file = cls._open[key] = cls(path)
            return file

    def version(self) -> bytes | None:
        """The file's change counter, or None while a rollback journal exists (a write in
        progress) or the file is in WAL mode (its commits do not bump the counter)."""
        header = os.pread(self._descriptor, 10, 18)
        if len(header) < 10 or header[0] != 1 or self._journal.exists() or self._wal.exists():
            return None
        return header[6:10]

    @contextmanager
    def connection(self) -> Iterator[sqlite3.Connection]:
        """An idle connection of this file (a new one when all are in use), returned after use;
        one left inside a transaction is set aside, not closed."""
        with self._idle_lock:
            connection = self._idle.pop() if self._idle else None
        if connection is None:
            connection = sqlite3.connect(
                f"{self.path.as_uri()}?mode=ro&nolock=1", uri=True, isolation_level=None, check_same_thread=False
            )
            self._connections.append(connection)
        try:
            yield connection
        finally:
            if connection.in_transaction:
                try:
                    connection.execute("ROLLBACK")
                except sqlite3.Error:
                    pass
            if not connection.in_transaction:
                with self._idle_lock:
                    self._idle.append(connection)
