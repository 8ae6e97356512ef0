"""Who may write an index, and when.

- Threads of one process: every ``ClusterIndex`` of the same store and name shares one
  re-entrant lock, so writes never interleave.
- Processes on one embedded store: Chroma's embedded client is single-process (two
  processes writing one folder corrupt its vector segments), so the first write of a
  process takes a file lock next to the store and keeps it until ``close()`` or exit; a
  write from any other process raises ``IndexLockedError``. Several writer processes need a
  Chroma server.
- Clients of one Chroma server: no lock; every write commits a manifest version with a
  compare-and-swap (see ``store``), so a writer that lost a race retries on the new state.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock, Timeout

from cluster_retriever.errors import IndexLockedError

_REGISTRY: dict[tuple[str, str], WriterLock] = {}
_REGISTRY_LOCK = threading.Lock()


class WriterLock:
    """The writer lock of one index (see the module docstring)."""

    def __init__(self, location: str, name: str, lock_file: Path | None, timeout_s: float) -> None:
        self.location = location
        self.name = name
        self.timeout_s = timeout_s
        self._thread_lock = threading.RLock()
        self._file_lock = FileLock(str(lock_file), thread_local=False) if lock_file is not None else None

    @classmethod
    def for_index(cls, location: str, name: str, embedded_path: Path | None, timeout_s: float = 10.0) -> WriterLock:
        """The process-wide lock of the index ``name`` at ``location`` (a folder or a server URL)."""
        key = (location, name)
        with _REGISTRY_LOCK:
            if key not in _REGISTRY:
                lock_file = embedded_path / f".{name}.writer.lock" if embedded_path is not None else None
                _REGISTRY[key] = cls(location, name, lock_file, timeout_s)
            return _REGISTRY[key]

    @contextmanager
    def hold(self) -> Iterator[None]:
        with self._thread_lock:
            if self._file_lock is not None and not self._file_lock.is_locked:
                try:
                    self._file_lock.acquire(timeout=self.timeout_s)
                except Timeout as exc:
                    raise IndexLockedError(
                        f"Another process is writing the embedded index {self.name!r} at {self.location} "
                        f"(lock file {self._file_lock.lock_file}). One process at a time may write an embedded "
                        f"store: close the other writer (ClusterIndex.close()), or run a Chroma server "
                        f"(`chroma run`) and pass host=... so that several processes can write."
                    ) from exc
            yield

    def release(self) -> None:
        """Let another process write (this process takes the lock again on its next write)."""
        with self._thread_lock:
            if self._file_lock is not None and self._file_lock.is_locked:
                self._file_lock.release(force=True)
