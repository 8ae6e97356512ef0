"""Scan kernels: the exact top-k of a query over the rows of some clusters.

A kernel is the seam of the scan: the search hands it the probed clusters and asks for
candidates; it never sees routing, filters or the store. ``numpy`` scores the lists' own
rows (memory-mapped or in memory) in place; ``faiss`` runs FAISS's IVF-Flat kernel over a
copy of them; ``sq8`` and ``pq4`` scan FAISS's compressed codes, then score the best
candidates exactly from the float rows (``RefinedKernel``). ``"auto"`` (``AUTO_CODEC``) is
resolved by the lists, which own the per-version cache and the background build.
"""

from __future__ import annotations

import functools
import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from cluster_retriever._optional import require


@dataclass(frozen=True)
class ScanResult:
    ids: list[str]
    scores: np.ndarray
    n_scanned: int
    rows: np.ndarray  # each hit's row in the lists (``ids`` are the lists' ids of these rows)

    @classmethod
    def empty(cls, n_scanned: int) -> ScanResult:
        return cls([], np.zeros(0, dtype=np.float32), n_scanned, np.zeros(0, dtype=np.int64))


@dataclass(frozen=True)
class Layout:
    """What a kernel reads of the lists: rows in cluster order, cluster ``c`` at
    ``offsets[c]:offsets[c + 1]``."""

    centroids: np.ndarray
    ids: np.ndarray
    vectors: np.ndarray
    labels: np.ndarray
    sizes: np.ndarray
    offsets: np.ndarray


class Kernel(Protocol):
    def scan(self, query: np.ndarray, clusters: np.ndarray | None, top_k: int) -> ScanResult:
        """Exact top-k over the rows of ``clusters`` (distinct non-empty cluster ids; None:
        every row), with how many rows it scored."""
        ...


def top_of(layout: Layout, scores: np.ndarray, rows: np.ndarray, top_k: int) -> ScanResult:
    """The ``top_k`` best of ``scores`` (one per row of ``rows``), best first."""
    k = min(top_k, len(scores))
    if k == 0:
        return ScanResult.empty(len(scores))
    best = np.argpartition(-scores, k - 1)[:k]
    best = best[np.argsort(-scores[best], kind="stable")]
    found = rows[best]
    return ScanResult(list(layout.ids[found]), scores[best].astype(np.float32), len(scores), found)


def scan_rows(layout: Layout, query: np.ndarray, rows: np.ndarray, top_k: int) -> ScanResult:
    """Exact top-k over the given rows (a filter's survivors, the outliers)."""
    return top_of(layout, np.asarray(layout.vectors[rows] @ query, dtype=np.float32), rows, top_k)


def ranges(layout: Layout, clusters: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row ranges of the given clusters, neighbours merged so each range is one matmul."""
    starts, ends = layout.offsets[clusters], layout.offsets[clusters + 1]
    if len(clusters) > 1:
        gap = starts[1:] != ends[:-1]  # between cluster i and i + 1
        first, last = np.append(True, gap), np.append(gap, True)
        starts, ends = starts[first], ends[last]
    return starts, ends


class NumpyKernel:
    """One matmul per run of adjacent probed clusters, straight over the lists' rows."""

    def __init__(self, layout: Layout) -> None:
        self.layout = layout

    def scan(self, query: np.ndarray, clusters: np.ndarray | None, top_k: int) -> ScanResult:
        layout = self.layout
        if clusters is None:
            starts, ends = np.array([0]), np.array([len(layout.ids)])
        else:
            starts, ends = ranges(layout, clusters)
        lengths = ends - starts
        scores = np.empty(int(lengths.sum()), dtype=np.float32)
        filled = np.concatenate([[0], np.cumsum(lengths)])
        vectors = layout.vectors
        for start, end, at in zip(starts.tolist(), ends.tolist(), filled.tolist(), strict=False):
            np.matmul(vectors[start:end], query, out=scores[at : at + end - start])
        k = min(top_k, len(scores))
        if k == 0:
            return ScanResult.empty(0)
        best = np.argpartition(-scores, k - 1)[:k]
        best = best[np.argsort(-scores[best], kind="stable")]
        block = np.searchsorted(filled, best, side="right") - 1
        found = starts[block] + best - filled[block]
        return ScanResult(list(layout.ids[found]), scores[best], len(scores), found)


def _preassigned(faiss: Any, layout: Layout, index: Any) -> Any:
    """A FAISS IVF ``index`` over ``layout``'s centroids (its quantizer) filled with the lists'
    own rows and assignments (``add_core`` with precomputed list numbers; FAISS ids are row
    numbers), so a scan of the same probed clusters reads the same rows."""
    vectors = np.ascontiguousarray(layout.vectors, dtype=np.float32)
    if not index.is_trained:  # the codec's ranges or codebooks; the quantizer is ours already
        step = max(1, len(vectors) // TRAIN_ROWS)
        index.train(np.ascontiguousarray(vectors[::step]))
    rows = np.arange(len(layout.ids), dtype=np.int64)
    labels = np.ascontiguousarray(layout.labels, dtype=np.int64)
    index.add_core(len(rows), faiss.swig_ptr(vectors), faiss.swig_ptr(rows), faiss.swig_ptr(labels))
    return index


def _quantizer(faiss: Any, layout: Layout) -> Any:
    quantizer = faiss.IndexFlatIP(layout.centroids.shape[1])
    quantizer.add(np.ascontiguousarray(layout.centroids, dtype=np.float32))
    return quantizer


def _search_preassigned(faiss: Any, index: Any, query: np.ndarray, clusters: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Scores and rows of the ``k`` best among the rows of ``clusters`` by ``index``'s codes."""
    params = faiss.SearchParametersIVF()
    params.nprobe = len(clusters)
    x = np.ascontiguousarray(query.reshape(1, -1), dtype=np.float32)
    probes = np.ascontiguousarray(clusters.reshape(1, -1), dtype=np.int64)
    coarse = np.zeros(probes.shape, dtype=np.float32)  # unused: no index here encodes residuals
    distances = np.empty((1, k), dtype=np.float32)
    rows = np.empty((1, k), dtype=np.int64)
    sp = faiss.swig_ptr
    index.search_preassigned_c(1, sp(x), k, sp(probes), sp(coarse), sp(distances), sp(rows), False, params)
    found = rows[0] >= 0
    return distances[0][found], rows[0][found]


TRAIN_ROWS = 65_536  # rows a codec is trained on (8-bit ranges, product-quantizer codebooks)


class FaissFlatKernel:
    """FAISS's IVF-Flat kernel over a copy of the float rows, made once per lists version.
    Measured no faster than ``numpy`` at 100k-300k (docs/benchmarks.md), hence opt-in."""

    def __init__(self, layout: Layout) -> None:
        self._faiss = faiss = require("faiss", "faiss")
        self.layout = layout
        dim, nlist = layout.centroids.shape[1], len(layout.centroids)
        self._ivf = _preassigned(
            faiss, layout, faiss.IndexIVFFlat(_quantizer(faiss, layout), dim, nlist, faiss.METRIC_INNER_PRODUCT)
        )

    def scan(self, query: np.ndarray, clusters: np.ndarray | None, top_k: int) -> ScanResult:
        layout = self.layout
        chosen = np.flatnonzero(layout.sizes) if clusters is None else clusters
        n_scanned = int(layout.sizes[chosen].sum())
        if min(top_k, n_scanned) == 0:
            return ScanResult.empty(0)
        scores, rows = _search_preassigned(self._faiss, self._ivf, query, chosen, min(top_k, n_scanned))
        return ScanResult(list(layout.ids[rows]), scores, n_scanned, rows)


class RefinedKernel:
    """Compressed codes scanned by FAISS, then exact scores from the float rows for the best
    ``refine x k``: the result is exact among the refined candidates, and a scan reads the
    codes (resident) plus a few hundred float rows (paged in from the lists file)."""

    # The least refinement tried, by codec (the depth is then chosen per lists version, see
    # ``_calibrated_refine``). Measured at 100k (bench/scan_kernels.py, CISI queries, default
    # probes): sq8 at 4 finds what the float scan finds (R@10 1.000 vs numpy); pq4 at 4 finds
    # 0.897 of it, at 16 0.997.
    REFINE = {"sq8": 4, "pq4": 16}
    AGREEMENT = 0.995  # share of the float scan's top 10 the refined scan must find on sampled rows
    REFINE_MAX = 64

    def __init__(self, layout: Layout, codec: str, refine: int | None = None) -> None:
        self._faiss = faiss = require("faiss", "faiss")
        self.layout = layout
        dim, nlist = layout.centroids.shape[1], len(layout.centroids)
        quantizer, ip = _quantizer(faiss, layout), faiss.METRIC_INNER_PRODUCT
        if codec == "sq8":  # 8 bits a dimension: 4x fewer bytes than float32
            index = faiss.IndexIVFScalarQuantizer(quantizer, dim, nlist, faiss.ScalarQuantizer.QT_8bit, ip, False)
            self._ivf = _preassigned(faiss, layout, index)
        else:  # "pq4": 4-bit codes of 2-d sub-vectors, scanned with FAISS's FastScan: 16x fewer bytes
            pq = faiss.IndexIVFPQ(quantizer, dim, nlist, dim // 2, 4, ip)
            pq.by_residual = False
            self._ivf = faiss.IndexIVFPQFastScan(_preassigned(faiss, layout, pq))
        self._quantizer = quantizer  # the index keeps a pointer to it, not a reference
        self.refine = self._calibrated_refine(self.REFINE[codec]) if refine is None else refine

    def _calibrated_refine(self, least: int, n_rows: int = 64, n_probe: int = 8) -> int:
        """The smallest depth (``least``, doubled up to ``REFINE_MAX``) at which the refined
        top 10 holds ``AGREEMENT`` of the float scan's top 10, on sampled rows as queries over
        their nearest clusters: the codes' error measured on this data, not assumed."""
        layout = self.layout
        if len(layout.ids) <= 10:
            return least
        exact = NumpyKernel(layout)
        picked = np.random.default_rng(0).choice(len(layout.ids), size=min(n_rows, len(layout.ids)), replace=False)
        samples = []
        for row in picked:
            query = np.asarray(layout.vectors[row], dtype=np.float32)
            order = np.argsort(-(layout.centroids @ query))
            clusters = order[layout.sizes[order] > 0][:n_probe]
            wanted = set(exact.scan(query, np.sort(clusters), 10).ids)
            _, rows = _search_preassigned(self._faiss, self._ivf, query, clusters, 10 * self.REFINE_MAX)
            samples.append((query, rows, wanted))
        refine = least
        while refine < self.REFINE_MAX:
            found = [len(wanted & set(scan_rows(layout, q, np.sort(rows[: 10 * refine]), 10).ids)) for q, rows, wanted in samples]
            if sum(found) >= self.AGREEMENT * sum(len(wanted) for _, _, wanted in samples):
                break
            refine *= 2
        return refine

    def scan(self, query: np.ndarray, clusters: np.ndarray | None, top_k: int) -> ScanResult:
        layout = self.layout
        chosen = np.flatnonzero(layout.sizes) if clusters is None else clusters
        n_scanned = int(layout.sizes[chosen].sum())
        depth = min(self.refine * top_k, n_scanned)
        if min(top_k, depth) == 0:
            return ScanResult.empty(0)
        _, rows = _search_preassigned(self._faiss, self._ivf, query, chosen, depth)
        refined = scan_rows(layout, query, np.sort(rows), top_k)  # sorted: the rows are read in file order
        return ScanResult(refined.ids, refined.scores, n_scanned, refined.rows)


AUTO_CODEC = "sq8"
"""What ``scan_kernel="auto"`` scans float16 lists' routed queries with, where FAISS is installed;
float32 lists are scanned from their rows. Measured in bench/scale.py (realistic vectors, real
queries, every method asked each query in a random order, ids only, the same probes): on
float32 lists sq8 and the float rows both take 0.24 ms p50 at 100k, the same recall@10 (0.977),
so the rows win, holding no codes (384 MB at 1M) and building none after each write; on float16
lists, which numpy scores without a half-precision kernel, sq8 takes 0.15-0.16 ms against the
rows' 0.29-0.33 at 100k and 0.23 against 0.56 at 1M (an index opened afresh, a loop of its own). The calibrated routing probes
clusters holding about 700 / 1,200 rows a query at 300k / 1M: too few for 4x fewer bytes to
pay for FAISS's call and the refinement where the rows are float32."""


@functools.cache
def faiss_installed() -> bool:
    return importlib.util.find_spec("faiss") is not None


KERNELS: dict[str, Callable[[Layout], Any]] = {
    "numpy": NumpyKernel,
    "faiss": FaissFlatKernel,
    "sq8": lambda layout: RefinedKernel(layout, "sq8"),
    "pq4": lambda layout: RefinedKernel(layout, "pq4"),
}
"""Kernel name (``SearchParams.scan_kernel``) -> its constructor over a lists layout."""
