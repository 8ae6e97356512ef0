"""The live state of one index handle: the snapshot its queries read, and following what
other handles, processes and clients wrote (the staleness check, ``refresh``).

What each level catches (see ``ClusterIndex.refresh``): the staleness check of a query, one
manifest read and one count, every write made through the library and records the app added
or deleted; a ``refresh()`` also in-place metadata changes; ``refresh(full=True)`` also
in-place embedding changes.
"""

from __future__ import annotations

import logging
import threading
import time

from cluster_retriever.errors import StoreOutOfSyncError
from cluster_retriever.index.loading import load_lists, reconcile
from cluster_retriever.index.snapshot import Readers, Records, Snapshot
from cluster_retriever.store.chroma import ChromaStore
from cluster_retriever.store.lists_file import ListsFile
from cluster_retriever.store.manifest import Manifest
from cluster_retriever.types import SearchStats

logger = logging.getLogger(__name__)


class QueryWatch:
    """What this handle's queries showed that the user should hear of: when a quarter of the
    first ``QUERIES`` routed queries lay far from every cluster (each then scanned exactly),
    the documents' calibration does not fit the queries the app asks: one warning says so and
    names the fix. Measured (bench/scale.py, realistic 100k, real queries): 56% of them below
    the documents' fence, the default path at 0.26x Chroma's speed; calibrated on real
    queries, 1.4% and 0.72x."""

    QUERIES = 100
    SHARE = 0.25

    def __init__(self, name: str) -> None:
        self.name = name
        self.queries = 0
        self.far = 0
        self._lock = threading.Lock()

    def saw(self, stats: SearchStats, calibrated_on_queries: bool) -> None:
        if self.queries >= self.QUERIES or (stats.exact and not stats.far_from_clusters):
            return  # watched long enough, or exact for another reason (a small index, flat)
        with self._lock:
            self.queries += 1
            self.far += stats.far_from_clusters
            done = self.queries == self.QUERIES
        if done and self.far >= self.SHARE * self.QUERIES:
            logger.warning(
                "%d of index %r's first %d routed queries were far from every cluster and scanned exactly (%s): "
                "its documents do not resemble the queries asked. Calibrate on real queries: "
                "index.calibrate(queries), with 20 or more.",
                self.far,
                self.name,
                self.QUERIES,
                "calibrated on queries already; recalibrate on the ones asked now"
                if calibrated_on_queries
                else "calibrated on its documents",
            )


class LiveState:
    """The current ``Snapshot`` of index ``store.name``, swapped whole on every change."""

    def __init__(
        self, store: ChromaStore, snapshot: Snapshot, lists_file: ListsFile | None, max_staleness_s: float | None
    ) -> None:
        self.store = store
        self.lists_file = lists_file
        self.max_staleness_s = max_staleness_s
        self.readers = Readers(lambda generation: store.drop_generation(generation, keep=self.snapshot.manifest.data_collection))
        self.snapshot = snapshot
        self.checked_at = time.monotonic()
        self._unreadable: tuple[int, int] | None = None  # (version, count) a refresh could not read
        self._warned_unreadable = False
        # the store's change token when a check last found the snapshot in line (reset by a switch)
        self._unmoved_at: object | None = None
        self.watch = QueryWatch(store.name)

    def switch(self, snapshot: Snapshot, retire: bool = True) -> None:
        """Make ``snapshot`` live; with ``retire``, the previous generation is dropped once no
        query here reads it (a rebuild retires generations itself)."""
        old = self.snapshot.manifest
        self.snapshot = snapshot
        self.checked_at = time.monotonic()
        self._unmoved_at = None
        if retire and snapshot.manifest.generation != old.generation and old.generation > 0:
            self.readers.retire(old.generation)

    def sync(self, compare_metadata: bool, full: bool = False) -> bool:
        """Bring the snapshot in line with the store; returns whether anything changed."""
        self.checked_at = time.monotonic()
        manifest = self.store.manifests.require()
        state = self.snapshot
        if full or manifest.generation != state.manifest.generation or manifest.data_collection != state.manifest.data_collection:
            lists = load_lists(self.store, manifest, self.lists_file, use_file=not full)
        else:
            lists = reconcile(self.store, manifest, state.lists, state.manifest.version, compare_metadata)
            if lists is state.lists and manifest.version == state.manifest.version:
                self._unreadable = None
                return False
        self._unreadable = None
        records = self.read_records(manifest) if state.records is not None else None
        self.switch(Snapshot(manifest, lists, records))
        return True

    def refresh_if_moved(self, retry_unreadable: bool = True) -> None:
        """The cheap check: nothing when an embedded store's file is unchanged since the last
        check found the snapshot in line (its change counter, ``chroma_file``), else one manifest
        read and one count; a sync only when either moved (a balanced add and delete made
        outside the library waits for ``refresh()``).
        ``retry_unreadable=False`` skips a sync that already failed on this very state."""
        self.checked_at = time.monotonic()
        state = self.snapshot
        token = self.store.change_token()  # read first: a write after it moves it again
        if token is not None and token == self._unmoved_at:
            return  # an embedded store's file unchanged since a check found this snapshot in line
        manifest = self.store.manifests.read()
        if manifest is None:
            self.sync(compare_metadata=False)
            return
        seen = (manifest.version, self.store.count(manifest.data_collection))
        if seen == (state.manifest.version, len(state.lists)):
            self._unmoved_at = token if state is self.snapshot else None
            return
        if not retry_unreadable and seen == self._unreadable:
            return
        try:
            self.sync(compare_metadata=False)
        except StoreOutOfSyncError:
            self._unreadable = seen
            raise

    def maybe_refresh(self) -> None:
        """The staleness check of a query, at most every ``max_staleness_s``. When another
        process wrote an embedded folder, the query keeps answering from the last state it
        could read (one WARNING says why and what to do), and the check retries only once the
        store moves again; writes and ``refresh()`` raise ``StoreOutOfSyncError`` instead."""
        if self.max_staleness_s is None or time.monotonic() - self.checked_at < self.max_staleness_s:
            return
        try:
            self.refresh_if_moved(retry_unreadable=False)
        except StoreOutOfSyncError as exc:
            if not self._warned_unreadable:
                logger.warning("index %r answers from its last readable state: %s", self.store.name, exc)
                self._warned_unreadable = True

    def read_records(self, manifest: Manifest) -> Records:
        return {doc_id: (text, metadata) for doc_id, text, metadata in self.store.iter_records(manifest.data_collection)}

    def cache_records(self) -> None:
        """Keep every record's text and metadata of the live snapshot in memory too."""
        state = self.snapshot
        self.switch(Snapshot(state.manifest, state.lists, self.read_records(state.manifest)))
