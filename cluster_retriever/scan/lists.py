"""In-memory inverted lists: each cluster's vectors in one contiguous block, with each row's
metadata for filtering.

Chroma stays the source of truth; this is the search structure built from it on open.
A routed query scans only the probed clusters' blocks exactly, so its results equal an
exact search restricted to those clusters (and to the rows a filter lets through), with
no filtered-HNSW recall loss.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from cluster_retriever.filters import NO_RESTRICTION, MetadataColumns, Restriction
from cluster_retriever.scan.kernels import AUTO_CODEC, KERNELS, Kernel, Layout, ScanResult, faiss_installed, scan_rows, top_of
from cluster_retriever.scan.masks import MaskCache

logger = logging.getLogger(__name__)


class InvertedLists:
    """Immutable: ``added`` and ``removed`` return new lists, so a query in flight on another
    thread always sees one consistent version."""

    def __init__(
        self,
        centroids: np.ndarray,
        ids: Sequence[str] | np.ndarray,
        vectors: np.ndarray,
        labels: np.ndarray,
        metadatas: Sequence[dict[str, Any]] | np.ndarray | None = None,
        affinity: np.ndarray | None = None,
        fence: float | None = None,
    ) -> None:
        centroids = np.ascontiguousarray(centroids, dtype=np.float32)
        id_array = np.asarray(list(ids), dtype=object)
        if not isinstance(vectors, np.ndarray) or vectors.dtype != np.float16:
            vectors = np.asarray(vectors, dtype=np.float32)
        vectors = vectors.reshape(len(id_array), centroids.shape[1])
        labels = np.asarray(labels, dtype=np.int64)
        meta = np.empty(len(id_array), dtype=object)
        meta[:] = list(metadatas) if metadatas is not None else [{} for _ in range(len(id_array))]
        if affinity is None:
            affinity = affinity_of(vectors, centroids, labels)
        order = np.argsort(labels, kind="stable")
        rows = (id_array[order], np.ascontiguousarray(vectors[order]), labels[order], meta[order], affinity[order])
        self._setup(centroids, *rows, fence)

    @classmethod
    def from_sorted(
        cls,
        centroids: np.ndarray,
        ids: np.ndarray,
        vectors: np.ndarray,
        labels: np.ndarray,
        metadatas: Callable[[], Sequence[dict[str, Any]]],
        affinity: np.ndarray,
        fence: float | None = None,
    ) -> InvertedLists:
        """Rows already in cluster order (a lists file): ``vectors`` is not copied (a memory map
        stays mapped), and ``metadatas`` is called on the first filtered query."""
        lists = cls.__new__(cls)
        # A plain ndarray over the same mapped pages: slicing a np.memmap runs Python code
        # (its __getitem__ and __array_finalize__), about 0.6 ms per query over ~250 clusters.
        # The memory map itself goes along for the outliers' rows to be read from its file.
        affinity = np.asarray(affinity, dtype=np.float32)
        lists._setup(centroids, ids, np.asarray(vectors), labels, metadatas, affinity, fence, mapped=vectors)
        return lists

    def _setup(
        self,
        centroids: np.ndarray,
        ids: np.ndarray,
        vectors: np.ndarray,
        labels: np.ndarray,
        metadatas: np.ndarray | Callable[[], Sequence[dict[str, Any]]],
        affinity: np.ndarray,
        fence: float | None,
        mapped: np.ndarray | None = None,
    ) -> None:
        """``mapped``: the memory map ``vectors`` views, if any (``read_rows`` reads its file)."""
        self.centroids = centroids
        self.affinity = affinity  # each row's cosine to its own centroid
        # Rows below it are outliers, always scanned; fixed when the clusters are fitted (see
        # ``outlier_fence``), so documents added later are judged against the fitted corpus.
        self.fence = outlier_fence(affinity) if fence is None else float(fence)
        self.spill = np.flatnonzero(affinity < self.fence)
        self._spill_labels = labels[self.spill]
        # The outliers' rows copied into one block, in memory: every routed query scores them
        # all, and a gather of the scattered rows from the (mapped) lists took 0.18 ms a query
        # at 300k where the block takes 0.04 (3,245 outliers, 5 MB; the probed clusters' own
        # scan 0.05 ms). Whether a routed query reads the lists file then depends only on its
        # probed clusters.
        self._spill_block = read_rows(vectors if mapped is None else mapped, self.spill)
        self.ids: np.ndarray = ids
        self.vectors = vectors
        self.labels = labels
        self._metadatas = metadatas if isinstance(metadatas, np.ndarray) else None
        self._load_metadatas = None if isinstance(metadatas, np.ndarray) else metadatas
        self.sizes = np.bincount(self.labels, minlength=self.n_clusters)
        self.offsets = np.concatenate([[0], np.cumsum(self.sizes)])
        self._position: dict[str, int] | None = None  # id -> row, made on first use (not by queries: 56 MB at 1M)
        self._columns: MetadataColumns | None = None
        self._masks = MaskCache(self.ids, lambda: self.columns)
        self._lazy_lock = threading.Lock()  # guards the metadata, the id map and the kernels
        self._kernels: dict[str, Kernel] = {}  # built on a kernel's first scan of this version
        self._building = False  # the auto kernel's codes are being built
        self.layout = Layout(self.centroids, self.ids, self.vectors, self.labels, self.sizes, self.offsets)

    @property
    def metadatas(self) -> np.ndarray:
        """Each row's filterable metadata (object array of dicts), read when first needed."""
        with self._lazy_lock:
            if self._metadatas is None:
                assert self._load_metadatas is not None
                loaded = np.empty(len(self.ids), dtype=object)
                loaded[:] = list(self._load_metadatas())
                self._metadatas = loaded
            return self._metadatas

    @property
    def columns(self) -> MetadataColumns:
        if self._columns is None:
            self._columns = MetadataColumns(self.metadatas)
        return self._columns

    @classmethod
    def empty(cls, dim: int) -> InvertedLists:
        return cls(np.zeros((1, dim), np.float32), [], np.zeros((0, dim), np.float32), np.zeros(0, np.int64))

    @property
    def n_clusters(self) -> int:
        return len(self.centroids)

    @property
    def dim(self) -> int:
        return int(self.centroids.shape[1])

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def positions(self) -> dict[str, int]:
        """Each id's row, made on the first call: a query knows its hits' rows from the scan,
        so only writes, MMR and lookups by id pay for it."""
        made = self._position
        if made is not None:  # made once and never changed: no lock for each of many lookups
            return made
        with self._lazy_lock:
            if self._position is None:
                self._position = {doc_id: i for i, doc_id in enumerate(self.ids.tolist())}
            return self._position

    def __contains__(self, doc_id: str) -> bool:
        return doc_id in self.positions

    def cluster_of(self, doc_id: str) -> int:
        return int(self.labels[self.positions[doc_id]])

    def vectors_of(self, ids: Sequence[str]) -> np.ndarray:
        """The stored unit vectors of these ids (each must be in the lists)."""
        positions = self.positions
        return np.asarray(self.vectors[[positions[doc_id] for doc_id in ids]], dtype=np.float32)

    def mask(self, restriction: Restriction = NO_RESTRICTION) -> np.ndarray | None:
        """Rows a query may return, or None when nothing restricts it (cached per restriction)."""
        return self._masks.mask(restriction)

    def sizes_within(self, mask: np.ndarray | None) -> np.ndarray:
        """Rows per cluster that ``mask`` lets through (every row when None)."""
        if mask is None:
            return self.sizes
        counts: np.ndarray = np.bincount(self.labels[mask], minlength=self.n_clusters)
        return counts

    def kernel(self, name: str) -> Kernel:
        """The scan kernel ``name`` over this version of the lists, made on first use (outside
        the lock: queries on other kernels do not wait for a build)."""
        with self._lazy_lock:
            made = self._kernels.get(name)
        if made is None:
            made = KERNELS[name](self.layout)
            with self._lazy_lock:
                made = self._kernels.setdefault(name, made)
        return made

    def auto_kernel(self, exact: bool) -> Kernel:
        """What ``scan_kernel="auto"`` scans with: the float32 rows; for float16 lists, which
        numpy scores slowly, the compressed ``AUTO_CODEC`` for routed scans once its codes are
        built (the first routed scan of this version starts the build in a background thread,
        so no query waits for it), their float rows until then, without FAISS and for an exact
        scan (measured: ``AUTO_CODEC``'s docstring)."""
        if exact or not faiss_installed() or self.vectors.dtype != np.float16:
            return self.kernel("numpy")
        with self._lazy_lock:
            built = self._kernels.get(AUTO_CODEC)
            start = built is None and not self._building
            self._building = self._building or start
        if start:
            threading.Thread(target=self._build_codes, name="cluster-retriever-codes", daemon=True).start()
        return built if built is not None else self.kernel("numpy")

    def _build_codes(self) -> None:
        """Build the auto kernel's codes; a failure is logged once and this version of the lists
        keeps scanning the float rows (the next write's version tries again)."""
        try:
            self.kernel(AUTO_CODEC)
        except Exception as exc:  # a FAISS error, memory: queries must not notice beyond speed
            logger.warning(
                "building the %s scan codes of %d vectors failed (%s: %s); queries scan the float rows, "
                "as scan_kernel='numpy' does, until the next write.",
                AUTO_CODEC,
                len(self.ids),
                type(exc).__name__,
                exc,
            )

    def scan(
        self,
        query: np.ndarray,
        clusters: Sequence[int] | np.ndarray | None,
        top_k: int,
        mask: np.ndarray | None = None,
        kernel: str = "auto",
        spill: bool = False,
    ) -> ScanResult:
        """Exact top-k over the given clusters (all of them when ``clusters`` is None), among
        the rows ``mask`` lets through; with ``spill``, over the outlier rows of every other
        cluster too (``outlier_fence``). Unfiltered scans run on the named ``kernel``; a
        filter's survivors are scored directly (only the allowed rows are read)."""
        chosen = None if clusters is None else self.nonempty(clusters)
        if mask is None:
            found = (self.auto_kernel(chosen is None) if kernel == "auto" else self.kernel(kernel)).scan(query, chosen, top_k)
        else:
            found = scan_rows(self.layout, query, self._rows_within(chosen, mask), top_k)
        if not spill or chosen is None or not len(self.spill):
            return found
        probed = np.zeros(self.n_clusters, dtype=bool)
        probed[chosen] = True  # a lookup table: np.isin over the probes took 0.1 ms a query at 100k
        beyond = ~probed[self._spill_labels]  # outliers the kernel did not scan already
        if mask is not None:
            beyond &= mask[self.spill]
        if not beyond.any():
            return found
        spilled = top_of(self.layout, np.asarray(self._spill_block @ query, dtype=np.float32)[beyond], self.spill[beyond], top_k)
        ids = found.ids + spilled.ids
        scores = np.concatenate([found.scores, spilled.scores]).astype(np.float32)
        rows = np.concatenate([found.rows, spilled.rows])
        best = np.argsort(-scores, kind="stable")[:top_k]
        return ScanResult([ids[i] for i in best], scores[best], found.n_scanned + spilled.n_scanned, rows[best])

    def _rows_within(self, clusters: np.ndarray | None, mask: np.ndarray) -> np.ndarray:
        """The rows of ``clusters`` (None: all) that ``mask`` lets through, in row order."""
        allowed = np.flatnonzero(mask)
        if clusters is None:
            return allowed
        starts, ends = self.offsets[clusters], self.offsets[clusters + 1]
        lo, hi = np.searchsorted(allowed, starts), np.searchsorted(allowed, ends)
        pieces = [allowed[a:b] for a, b in zip(lo.tolist(), hi.tolist(), strict=True)]
        return np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.int64)

    def nonempty(self, clusters: Sequence[int] | np.ndarray) -> np.ndarray:
        """The distinct given clusters that hold rows, in order."""
        chosen = np.unique(np.asarray(clusters, dtype=np.int64))
        nonempty: np.ndarray = chosen[self.sizes[chosen] > 0]
        return nonempty

    def added(
        self, ids: Sequence[str], vectors: np.ndarray, labels: np.ndarray, metadatas: Sequence[dict[str, Any]] | None = None
    ) -> InvertedLists:
        new_meta = np.empty(len(ids), dtype=object)
        new_meta[:] = list(metadatas) if metadatas is not None else [{} for _ in ids]
        labels = np.asarray(labels, dtype=np.int64)
        return InvertedLists(
            self.centroids,
            np.concatenate([self.ids, np.asarray(list(ids), dtype=object)]),
            np.concatenate([self.vectors, vectors.astype(self.vectors.dtype)]),
            np.concatenate([self.labels, labels]),
            np.concatenate([self.metadatas, new_meta]),
            np.concatenate([self.affinity, affinity_of(vectors, self.centroids, labels)]),
            self.fence,
        )

    def removed(self, ids: Sequence[str]) -> InvertedLists:
        keep = ~np.isin(self.ids, np.asarray(list(ids), dtype=object))
        return InvertedLists(
            self.centroids,
            self.ids[keep],
            self.vectors[keep],
            self.labels[keep],
            self.metadatas[keep],
            self.affinity[keep],
            self.fence,
        )


def read_rows(vectors: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """``vectors[rows]`` as float32, in memory; from a memory-mapped file by reads of those rows
    alone: a gather through the mapping maps far more than it reads (this kernel maps the page
    cache's large folios whole: 3,763 outlier rows, 5.8 MB, mapped 719 MB at 1M)."""
    if not isinstance(vectors, np.memmap) or vectors.filename is None or not len(rows) or vectors.ndim != 2:
        return np.ascontiguousarray(vectors[rows], dtype=np.float32)
    width = vectors.shape[1] * vectors.itemsize
    with open(vectors.filename, "rb", buffering=0) as f:
        raw = b"".join(os.pread(f.fileno(), width, vectors.offset + int(row) * width) for row in rows)
    return np.frombuffer(raw, dtype=vectors.dtype).reshape(len(rows), vectors.shape[1]).astype(np.float32)


def affinity_of(vectors: np.ndarray, centroids: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Each row's cosine to its own centroid (unit rows and centroids)."""
    if not len(labels):
        return np.zeros(0, dtype=np.float32)
    rows = np.asarray(vectors, dtype=np.float32)
    return np.asarray(np.einsum("ij,ij->i", rows, centroids[labels]), dtype=np.float32)


def outlier_fence(affinity: np.ndarray) -> float:
    """The affinity below which a row is an outlier: Tukey's outer fence (Q1 - 3 IQR) of the
    affinities of the rows the clusters were fitted on. Routing cannot be trusted for a row
    that far from its centroid: every centroid is about as far, so a small change of the
    vector (the query is a document's text without its metadata, say) reshuffles which cluster
    comes first, and its cluster may rank 100th for its own text. Routed queries scan outliers
    always, and a query whose nearest centroid is below the fence is scanned exactly.
    Measured on CISI (1,460 documents, k=195): fence 0.40 (interquartile range 0.73-0.84); 0 of
    its documents below it, and 1.3% of its 76 queries' nearest centroids; 10 off-topic notes
    and 150 BBC News articles inserted into it mostly fall below (affinity 0.1-0.4)."""
    if len(affinity) < 20:  # too few rows for quartiles to mean anything
        return float("-inf")
    q1, q3 = np.percentile(affinity, [25, 75])
    return round(float(q1 - 3.0 * (q3 - q1)), 6)  # as Chroma's metadata gives it back
