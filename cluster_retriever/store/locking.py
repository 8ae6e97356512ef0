"""Who may write an index, and when.

- Threads of one process: every ``ClusterIndex`` of the same store and name shares one
  re-entrant lock, so writes never interleave.
- Processes on one embedded store: Chroma's embedded client is single-process. It caches
  the store's segments per process, so two processes writing one folder corrupt it, and a
  process reading while another writes fails with ``Error finding id``. The store is
  therefore locked like SQLite locks a file: any number of processes may open it to read
  (a shared lock, taken on open), or one process may write (an exclusive lock, taken on its
  first write and kept until ``close()`` or exit). A process refused either gets
  ``IndexLockedError``; several writer processes need a Chroma server.
- Clients of one Chroma server: no lock; every write commits a manifest version with a
  compare-and-swap (see ``store``), so a writer that lost a race retries on the new state.
"""

from __future__ import annotations

import fcntl
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from cluster_retriever.errors import IndexLockedError

_LOCK_FILE = ".cluster_retriever.lock"
_REGISTRY: dict[tuple[str, str], WriterLock] = {}
_FOLDERS: dict[str, _FolderLock] = {}
_REGISTRY_LOCK = threading.RLock()


class _FolderLock:
    """This process's shared or exclusive ``flock`` on one embedded store folder."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.mode = 0  # 0, fcntl.LOCK_SH or fcntl.LOCK_EX
        self._file: IO[bytes] | None = None
        self._lock = threading.Lock()

    def acquire(self, mode: int, timeout_s: float) -> None:
        with self._lock:
            if self.mode == fcntl.LOCK_EX or self.mode == mode:
                return
            if self._file is None:
                self._file = open(self.folder / _LOCK_FILE, "a+b")
            deadline = time.monotonic() + timeout_s
            while True:
                try:
                    fcntl.flock(self._file.fileno(), mode | fcntl.LOCK_NB)
                    self.mode = mode
                    return
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        break
                    time.sleep(0.05)
            wanted = "write" if mode == fcntl.LOCK_EX else "read"
            holder = "reads or writes" if mode == fcntl.LOCK_EX else "writes"
            raise IndexLockedError(
                f"Cannot {wanted} the embedded store {self.folder}: another process {holder} it. Chroma's embedded "
                f"client is single-process: any number of processes may read a store, or one may write it. Close "
                f"the other process's index (ClusterIndex.close()), or run a Chroma server (`chroma run`) and pass "
                f"host=... so that several processes can read and write."
            )

    def release(self) -> None:
        with self._lock:
            if self._file is not None:
                fcntl.flock(self._file.fileno(), fcntl.LOCK_UN)
                self._file.close()
                self._file = None
            self.mode = 0


def _folder_lock(folder: Path) -> _FolderLock:
    key = os.fspath(folder)
    with _REGISTRY_LOCK:
        if key not in _FOLDERS:
            _FOLDERS[key] = _FolderLock(folder)
        return _FOLDERS[key]


class WriterLock:
    """The writer lock of one index (see the module docstring)."""

    def __init__(self, location: str, name: str, folder: Path | None) -> None:
        self.location = location
        self.name = name
        self._thread_lock = threading.RLock()
        self._folder = _folder_lock(folder) if folder is not None else None

    @classmethod
    def for_index(cls, location: str, name: str, embedded_folder: Path | None) -> WriterLock:
        """The process-wide lock of the index ``name`` at ``location`` (a folder or a server URL)."""
        key = (location, name)
        with _REGISTRY_LOCK:
            if key not in _REGISTRY:
                _REGISTRY[key] = cls(location, name, embedded_folder)
            return _REGISTRY[key]

    def open_for_reading(self, timeout_s: float) -> None:
        """Take the embedded store's shared lock (no-op on a server)."""
        if self._folder is not None:
            self._folder.acquire(fcntl.LOCK_SH, timeout_s)

    @contextmanager
    def hold(self, timeout_s: float) -> Iterator[None]:
        """Hold the lock for one write; ``timeout_s`` bounds the wait for another process."""
        with self._thread_lock:
            if self._folder is not None:
                self._folder.acquire(fcntl.LOCK_EX, timeout_s)
            yield

    def release(self) -> None:
        """Let other processes read and write the embedded store (this process takes the
        lock again on its next open or write)."""
        with self._thread_lock:
            if self._folder is not None:
                self._folder.release()
