"""Calibrating the probe budget to a recall target, per index, on the index's own data.

At build and at every re-clustering, a sample of the stored vectors serves as pseudo-queries
(leave-one-out: a document is not its own neighbour). For each, the exact top-k is known,
and so is how many documents, in nearest-centroid order, must be scanned before each of
those neighbours' clusters is reached. That gives recall against exact search as a function
of the scan budget; the smallest budget reaching each target is stored in the manifest as a
factor of ``k^(1/3)`` mean-sized clusters, so the rule keeps holding as the index grows.

The budget is the smallest at which ``route`` itself (boundary clusters included) reaches
the target on those queries, so the calibration delivers its target on queries like them,
not more. Users' questions sit further from their neighbours than documents do (a headline
against its article), so where the documents' texts are at hand a sentence of each sampled
document joins them as a pseudo-query (``query_like_crops``, the random cropping Contriever
trains on), and the budget is calibrated apart for each quarter of the pseudo-queries'
nearest-centroid similarity (``NEAREST_BINS``): a query gets the budget of queries as far
from the clusters as it is. Documents alone delivered 0.921 of exact search's top 100 for
0.96 to BBC News headlines; binned with sentences, 0.956 (bench/quality_guard.py). Crops are used
only when most of them find their own document among their nearest (the stored vectors are
the model's embeddings of those texts). ``ClusterIndex.calibrate(queries)`` calibrates on a
sample of real queries instead, and then delivers the target on queries like those.
"""

from __future__ import annotations

import re
from bisect import bisect_left
from collections.abc import Callable, Sequence
from functools import partial
from itertools import pairwise
from typing import TypedDict

import numpy as np
from llama_index.core.base.embeddings.base import BaseEmbedding

from cluster_retriever.embeddings import embed_queries, unit_rows
from cluster_retriever.routing import DEFAULT_PARAMS, PROBE_FACTOR, default_scan_budget, route
from cluster_retriever.scan.lists import InvertedLists, outlier_fence

TARGETS = (0.9, 0.95, 0.96, 0.97, 0.98, 0.99, 0.999)
DEPTHS = (10, 100)
PSEUDO_QUERIES = 256
MIN_DOCS = 50  # below this there is nothing to calibrate: small indexes are scanned exactly
MIN_QUERIES = 20  # real queries ``ClusterIndex.calibrate`` asks for at least
_BATCH = 32
NEAREST_BINS = 4
"""The budget is calibrated apart for each quarter of the pseudo-queries' nearest-centroid
similarity (fewer bins below ``MIN_PER_BIN`` queries each): far queries need more clusters."""
MIN_PER_BIN = 64
BAND = "band:10"
"""Where the calibration stores its similarity bands for depth 10, beside the budget factors
under ``"10"`` and ``"100"`` (which a library older than bands still reads). A query for the top
10 probes every cluster within the band of its nearest one: on the realistic 300k bench, on
the same clusters and pseudo-queries, the band's probes held 0.952 of real queries' exact top
10 for 0.96 (0.228% scanned) and a budget in documents' 0.931 (0.233%): a query whose
neighbours spread over many near-equal clusters probes them all (the whole search, outliers
and all: 0.965 against 0.916). Deeper searches keep the
budget (their neighbours fill many small clusters, counted better in documents: bands at
depth 100 scanned 57% of CISI for 0.989 and 34% of BBC News for 0.940 against the budget's
32% for 0.965 and 27% for 0.959), calibrated beside the band of depth 10 (``route`` probes the
longer of the two prefixes), and stored apart, so a library older than bands still reads a
budget calibrated alone."""
BUDGET_BESIDE_BAND = "budget+band:100"
CROP_WORDS = 32  # a crop is one sentence, at most this many words of it: about a long question

Calibration = dict[str, dict[str, float | list[float]]]
"""depth (as text) -> target (as text) -> budget factors in ``k^(1/3)`` mean-sized clusters, one
per bin of the query's nearest-centroid similarity, lowest first (a plain number: one bin);
``"nearest" -> "edges"``: the bins' inner edges; ``"nearest" -> "centers"``: the bins' medians, between
which a query's band (``BAND``) is interpolated by its similarity (a calibration without them: a step per bin)."""


def pseudo_query_rows(n: int, seed: int) -> np.ndarray:
    """The rows of the lists whose documents serve as pseudo-queries (and whose texts are cropped)."""
    rows: np.ndarray = np.random.default_rng(seed).choice(n, size=min(PSEUDO_QUERIES, n), replace=False)
    return rows


def query_like_crops(texts: Sequence[str], seed: int) -> list[str]:
    """One sentence of each text, at random (a window of ``CROP_WORDS`` words of a longer one;
    half the words of a text that is one sentence), as a query about its document would read."""
    rng = np.random.default_rng(seed)
    crops = []
    for text in texts:
        sentences = [part for part in re.split(r"(?<=[.!?])\s+|\n+", text) if len(part.split()) >= 3]
        words = sentences[rng.integers(len(sentences))].split() if len(sentences) > 1 else text.split()
        length = min(CROP_WORDS, len(words) if len(sentences) > 1 else max(1, len(words) // 2))
        start = int(rng.integers(0, len(words) - length + 1))
        crops.append(" ".join(words[start : start + length]))
    return crops


def calibrate(
    lists: InvertedLists, seed: int = 0, queries: np.ndarray | None = None, crops: tuple[np.ndarray, np.ndarray] | None = None
) -> Calibration:
    """The budget factors reaching each target at each depth, as ``route`` itself probes at
    the default parameters (boundary clusters included), per bin of the queries'
    nearest-centroid similarity: on ``queries`` (unit vectors of real queries) when given, else
    on the documents of ``pseudo_query_rows`` and ``crops`` (those rows, and their crops'
    unit query vectors), when most crops find their own document among their nearest."""
    n = len(lists)
    if n < MIN_DOCS:
        return {}
    depth_max = min(max(DEPTHS), n - 1)
    # query vectors, the rows left out (documents are not their own neighbours), and a crop's own document's row
    batches: list[tuple[np.ndarray, np.ndarray | None, np.ndarray | None]]
    if queries is None:
        sample = pseudo_query_rows(n, seed)
        batches = [(lists.vectors[rows], rows, None) for rows in np.array_split(sample, -(-len(sample) // _BATCH))]
        if crops is not None:
            batches += [
                (crops[1][start : start + _BATCH], None, crops[0][start : start + _BATCH])
                for start in range(0, len(crops[1]), _BATCH)
            ]
    else:
        batches = [(queries[start : start + _BATCH], None, None) for start in range(0, len(queries), _BATCH)]
    neighbours: list[np.ndarray] = []  # per query: each neighbour's cluster
    similarities: list[np.ndarray] = []
    own_ranks: list[np.ndarray] = []  # per crop: the documents nearer to it than its own
    for batch, rows, own in batches:
        scores = batch @ lists.vectors.T
        if rows is not None:
            scores[np.arange(len(rows)), rows] = -np.inf  # leave one out: a document is not its own neighbour
        if own is not None:
            own_ranks.append(np.count_nonzero(scores > scores[np.arange(len(own)), own][:, None], axis=1))
        nearest = np.argpartition(-scores, depth_max - 1, axis=1)[:, :depth_max]
        nearest = np.take_along_axis(nearest, np.argsort(-np.take_along_axis(scores, nearest, 1), axis=1), 1)
        # in float64: the bands are similarities, stored to 6 decimals, and must not depend on
        # how the rows lie in memory (a mapped lists file and a copy give float32 sums apart)
        similarity = np.asarray(batch, dtype=np.float64) @ lists.centroids.T.astype(np.float64)
        similarity[:, lists.sizes == 0] = -np.inf
        neighbours.append(lists.labels[nearest])
        similarities.append(similarity)
    clusters, similarity = np.concatenate(neighbours), np.concatenate(similarities)
    with_crops = bool(own_ranks) and _find_their_documents(np.concatenate(own_ranks), n)
    documents = len(clusters) - sum(len(ranks) for ranks in own_ranks)  # the crops come after the documents
    if own_ranks and not with_crops:
        clusters, similarity = clusters[:documents], similarity[:documents]
    unit = default_scan_budget(lists.sizes, 1.0)
    nearest_centroid = np.max(similarity, axis=1)
    n_bins = max(1, min(NEAREST_BINS, len(similarity) // MIN_PER_BIN))
    edges = np.unique(np.quantile(nearest_centroid, np.arange(1, n_bins) / n_bins, method="lower"))
    bins = [np.flatnonzero(np.searchsorted(edges, nearest_centroid) == b) for b in range(len(edges) + 1)]
    if min(len(rows) for rows in bins) == 0:  # ties at the top: one bin
        edges, bins = edges[:0], [np.arange(len(nearest_centroid))]
    # each bin's median: the band is interpolated between them by the query's own similarity
    # (rounded, as the edges, to what does not depend on how the rows lie in memory; medians
    # within 1e-6 of each other, which only near-identical vectors give, keep the steps)
    centers = _increasing([round(float(np.median(nearest_centroid[rows])), 6) for rows in bins]) or []
    table: Calibration = {"nearest": {"edges": [round(float(edge), 6) for edge in edges]}}
    if centers:
        table["nearest"]["centers"] = centers
    if with_crops:  # the calibration measured query-like vectors this far out: route them, not scan
        table["nearest"]["fence"] = min(outlier_fence(nearest_centroid[documents:]), outlier_fence(nearest_centroid[:documents]))
    # how much less similar than the nearest centroid each neighbour's centroid is
    gaps = nearest_centroid[:, None] - np.take_along_axis(similarity, clusters, axis=1)
    routes = [Routes(similarity[rows], lists.sizes, clusters[rows]) for rows in bins]
    at = [nearest_centroid[rows] for rows in bins]  # each bin's queries' similarities, for the interpolation
    for depth in DEPTHS:
        width = min(depth, depth_max)
        by_target = table[str(depth)] = {}
        bands = table.setdefault(BAND, {}) if depth == 10 else None
        beside = table.setdefault(BUDGET_BESIDE_BAND, {}) if depth == 100 else None
        recalls = [partial(route.recall, min_docs=depth, width=width) for route in routes]
        for target in TARGETS:
            factors, widths, joint = [], [], []
            for b, rows in enumerate(bins):
                # Scanning nearest clusters up to this budget alone reaches the target; route's
                # boundary clusters reach it on less: the smallest factor at which they do.
                recall = recalls[b]
                ceiling = _smallest_budget(routes[b].before[:, :width], target) / unit
                # a budget alone reaches the target on no less than a quarter of what its nearest clusters need
                factors.append(_smallest_reaching(recall, "budget_factor", target, 0.25 * ceiling, ceiling))
                if bands is not None:  # likewise the band: probing every centroid within the target's
                    # quantile of these gaps reaches it; filling up to ``depth`` documents, on less
                    quantile = float(np.quantile(gaps[rows, :width], target, method="higher"))
                    widths.append(_smallest_reaching(recall, "band", target, 0.0, quantile))
                if beside is not None:  # deeper: the budget that, with the band of depth 10, reaches it
                    within = table[BAND][str(target)]
                    assert isinstance(within, list)
                    per_query = _interpolated(at[b], centers, within) if centers else within[b]
                    joint.append(_smallest_reaching(partial(recall, band=per_query), "budget_factor", target, 0.0, ceiling))
            # A query further from every cluster never gets a smaller budget than a nearer one
            # (a band is not monotone so: deep inside a cluster, its centroid stands further
            # above the others', so the same neighbours lie further below it).
            by_target[str(target)] = np.maximum.accumulate(factors[::-1])[::-1].tolist()
            if bands is not None:  # rounded up: a query's float32 similarities lie within 1e-6 of these
                raised = _interpolated_bands(recalls, at, centers, widths, target) if centers else widths
                bands[str(target)] = (np.ceil(np.asarray(raised) * 1e6) / 1e6).tolist()
            if beside is not None:
                beside[str(target)] = joint
    return table


def _increasing(centers: object) -> list[float] | None:
    """``centers`` when they are medians interpolation can run between (two or more, strictly
    increasing), else None: a calibration without them routes by a step per bin."""
    if isinstance(centers, list) and len(centers) > 1 and all(a < b for a, b in pairwise(centers)):
        return centers
    return None


def _interpolated(nearest: np.ndarray | float, centers: Sequence[float], values: Sequence[float] | np.ndarray) -> np.ndarray:
    """Per query, the band interpolated linearly between the bins' ``values`` at their
    ``centers`` (``_increasing``) by the query's nearest-centroid similarity (the end bins'
    values beyond them)."""
    return np.asarray(np.interp(nearest, centers, values), dtype=np.float64)


def _interpolated_bands(
    recalls: Sequence[Callable[..., float]],
    at: Sequence[np.ndarray],
    centers: Sequence[float],
    widths: Sequence[float],
    target: float,
) -> list[float]:
    """The bins' bands raised until, interpolated by each query's own similarity (``at``: each
    bin's queries'), every bin still reaches ``target`` (``recalls``: each bin's, of a band per
    query). A step per bin gives every query the need of its bin's average
    query: at 1M (bench/scale.py) the real queries lay at the low end of their bin, nearer the
    band of the bin below, and got 0.931 of their top 10 where the bin's pseudo-queries got the
    target 0.96. Raising one bin's band helps its neighbours' queries too, so a few passes
    settle it; a band raised alike for every bin always does (it shifts every query's by as
    much), which ends it if they do not."""
    values = np.asarray(widths, dtype=np.float64)

    def reached(b: int, band: np.ndarray) -> float:
        return recalls[b](band=band)

    for _ in range(2 * len(values)):
        raised = False
        for b in range(len(values)):
            if reached(b, _interpolated(at[b], centers, values)) >= target:
                continue

            def own(band: float, b: int = b) -> float:
                return reached(b, _interpolated(at[b], centers, np.where(np.arange(len(values)) == b, band, values)))

            ceiling = max(float(values[b]), 1e-4) * 4
            values[b] = _smallest_reaching(own, "band", target, float(values[b]), ceiling)
            raised = True
        if not raised:
            return [float(value) for value in values]

    def shifted(band: float) -> float:
        return min(reached(b, _interpolated(at[b], centers, values + band)) for b in range(len(values)))

    return [float(value) for value in values + _smallest_reaching(shifted, "band", target, 0.0, 2.0)]


def _find_their_documents(own_ranks: np.ndarray, n: int) -> bool:
    """Whether most crops rank their own document among their nearest: the 100 nearest, or the
    nearest 1% of a larger collection (where chance puts a shuffled one 1% of the time). On
    CISI and BBC News 92-96% do, against 4-7% with the documents shuffled (stored vectors that
    are not the model's embeddings of their texts would calibrate on noise). Near-duplicate
    documents (overlapping chunks, copies) share a crop's rank: on the realistic 100k bench
    (28 vectors grown from each text), 46% have their own among the 100 nearest, 78% within the
    nearest 1,000 (shuffled: 1.6%)."""
    return bool(np.mean(own_ranks < max(max(DEPTHS), n // 100)) > 0.5)


def calibrated_on(lists: InvertedLists, queries: np.ndarray) -> dict[str, Calibration | float | None]:
    """The manifest fields a calibration on real ``queries`` sets: the routing budget, and the
    off-topic fence (a query further from every centroid than these queries' outer fence is
    searched exactly)."""
    nearest = np.max(queries @ lists.centroids.T, axis=1)  # each query's nearest centroid
    return {"calibration": calibrate(lists, queries=queries), "query_fence": outlier_fence(nearest)}


def calibration_queries(embed_model: BaseEmbedding, queries: Sequence[str] | np.ndarray) -> np.ndarray:
    """Real queries to calibrate on, as unit rows: texts are embedded with the index's model."""
    if isinstance(queries, np.ndarray):
        vectors = np.atleast_2d(np.asarray(queries, dtype=np.float32))
    elif all(isinstance(query, str) for query in queries):
        vectors = embed_queries(embed_model, queries)
    else:
        raise TypeError("queries must be query texts or an array of their embeddings (one row a query).")
    if len(vectors) < MIN_QUERIES:
        raise ValueError(
            f"Calibrating on {len(vectors)} queries would promise little: give at least {MIN_QUERIES} "
            f"real queries (a sample of your users' questions, or an evaluation set's)."
        )
    return unit_rows(vectors)


class Routes:
    """What ``route`` at the default parameters probes for many queries at once, as the length
    of each query's nearest-first prefix of clusters, and where each of their neighbours'
    clusters comes in it (the calibration tries thousands of budgets and bands: one ``route``
    call each took 1-2 s per calibration, this takes milliseconds; tests/test_calibration.py
    checks both give the same prefixes)."""

    def __init__(self, similarity: np.ndarray, sizes: np.ndarray, clusters: np.ndarray) -> None:
        order = np.argsort(-similarity, axis=1, kind="stable")
        self.sorted = np.take_along_axis(similarity, order, axis=1)  # each query's similarities, nearest first
        self.held = np.cumsum(sizes[order], axis=1)  # documents in each prefix
        rank = np.empty_like(order)
        np.put_along_axis(rank, order, np.broadcast_to(np.arange(order.shape[1]), order.shape), axis=1)
        self.place = np.take_along_axis(rank, clusters, axis=1)  # where each neighbour's cluster comes
        # documents scanned before reaching each neighbour's cluster
        self.before = np.take_along_axis(self.held, self.place, axis=1) - sizes[clusters]
        self.sizes = sizes
        self.n_nonempty = int(np.count_nonzero(sizes))

    def probed(self, budget_factor: float | None = None, band: float | np.ndarray | None = None, min_docs: int = 0) -> np.ndarray:
        """Per query, how many nearest clusters ``route(..., min_docs=, budget_factor=, band=)``
        probes; ``band`` one for all queries or one per query."""
        length = np.ones(len(self.sorted), dtype=np.int64)
        if band is not None:
            length = np.count_nonzero(self.sorted >= self.sorted[:, :1] - np.reshape(band, (-1, 1)), axis=1)
        if budget_factor is not None or band is None:
            budget = default_scan_budget(self.sizes, PROBE_FACTOR if budget_factor is None else budget_factor)
            base = np.minimum(np.count_nonzero(self.held < budget, axis=1) + 1, self.n_nonempty)
            threshold = self.sorted[np.arange(len(base)), base - 1] - DEFAULT_PARAMS.boundary_margin
            near = np.count_nonzero(self.sorted >= threshold[:, None], axis=1)
            length = np.maximum(length, base + np.minimum(base // 2, near - base))
        fill = np.minimum(np.count_nonzero(self.held < min_docs, axis=1) + 1, self.n_nonempty)
        probed: np.ndarray = np.maximum(length, fill)
        return probed

    def recall(
        self,
        budget_factor: float | None = None,
        band: float | np.ndarray | None = None,
        min_docs: int = 0,
        width: int | None = None,
    ) -> float:
        """The share of the (first ``width``) neighbours whose clusters those prefixes hold."""
        return float(np.mean(self.place[:, :width] < self.probed(budget_factor, band, min_docs)[:, None]))


def _smallest_reaching(recall: Callable[..., float], name: str, needed: float, lo: float, hi: float) -> float:
    """The smallest value of ``recall``'s argument ``name`` (``budget_factor`` or ``band``), to
    2% and within ``lo``-``hi``, at which it reaches ``needed``: ``recall`` is a
    ``Routes.recall``, which only grows with either."""
    if recall(**{name: hi}) < needed:  # cannot happen (the boundary clusters only add), kept as the safe side
        return hi
    if lo == 0.0 and recall(**{name: lo}) >= needed:
        return 0.0
    while hi - lo > max(0.02 * hi, 1e-4):
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if recall(**{name: mid}) >= needed else (mid, hi)
    return hi


def _smallest_budget(prefix: np.ndarray, needed: float) -> float:
    """The smallest budget B for which the mean share of neighbours with prefix < B reaches
    ``needed``; a neighbour's cluster is probed once the budget exceeds the documents before it."""
    candidates = np.unique(prefix)
    lo, hi = 0, len(candidates) - 1
    while lo < hi:  # recall(B) = mean(prefix < B) grows with B
        mid = (lo + hi) // 2
        if float(np.mean(prefix < candidates[mid] + 1)) >= needed:
            hi = mid
        else:
            lo = mid + 1
    return float(candidates[lo] + 1)


def budget_factor(calibration: Calibration, top_k: int, target: float, nearest: float | None = None) -> float | None:
    """The stored budget factor for ``top_k``, the smallest stored target at or above ``target``
    and a query whose nearest centroid has similarity ``nearest`` (None: the largest, for the
    furthest queries); None when the index has no calibration, or the target is above every
    stored one. Deeper than 10, it never scans less than depth 10 needs."""
    factor = _stored(calibration, "10" if top_k <= 10 else "100", target, nearest)
    if factor is None or top_k <= 10:
        return factor
    return max(factor, _stored(calibration, "10", target, nearest) or 0.0)


def band(calibration: Calibration, target: float, nearest: float | None = None) -> float | None:
    """Like ``budget_factor``, the stored similarity band of depth 10 (``route``'s ``band``);
    None also for a calibration stored before bands were (it has budget factors only)."""
    return _stored(calibration, BAND, target, nearest)


def _stored(calibration: Calibration, key: str, target: float, nearest: float | None) -> float | None:
    edges = calibration.get("nearest", {}).get("edges", [])
    position = bisect_left(edges, nearest) if nearest is not None and isinstance(edges, list) else 0  # every query: no array
    centers = _increasing(calibration.get("nearest", {}).get("centers"))
    if key == BAND and centers is not None:  # interpolated by the query's similarity
        values = _values_at(calibration.get(key, {}), target)
        if isinstance(values, list) and len(values) == len(centers):
            return float(_interpolated(centers[0] if nearest is None else nearest, centers, values))
    return _factor_at(calibration.get(key, {}), target, position)


class RouteRule(TypedDict):
    """``route``'s calibrated arguments."""

    budget_factor: float | None
    band: float | None


def routing_rule(calibration: Calibration, top_k: int, target: float, nearest: float) -> RouteRule:
    """``route``'s calibrated arguments for a query: the band for the top 10 where one is stored;
    deeper, the band of depth 10 and the budget calibrated beside it; else the budget alone."""
    within = band(calibration, target, nearest)
    if within is None:
        return {"budget_factor": budget_factor(calibration, top_k, target, nearest), "band": None}
    if top_k <= 10:
        return {"budget_factor": None, "band": within}
    return {"budget_factor": _stored(calibration, BUDGET_BESIDE_BAND, target, nearest), "band": within}


def routed_fence(calibration: Calibration, documents_fence: float, query_fence: float | None = None) -> float:
    """The nearest-centroid similarity below which a query is scanned exactly, not routed: the
    fence of real queries calibrated on (``query_fence``), else that of the pseudo-queries the
    calibration measured when they included crops (queries read further from the clusters than
    documents), else the documents' own (``InvertedLists.fence``)."""
    if query_fence is not None:
        return query_fence
    fence = calibration.get("nearest", {}).get("fence")
    return float(fence) if isinstance(fence, float | int) else documents_fence


def calibrated_route(
    lists: InvertedLists, calibration: Calibration, query: np.ndarray, top_k: int, target: float
) -> np.ndarray | None:
    """The clusters adaptive routing probes for ``query`` at ``calibration``'s budget for its
    nearest-centroid similarity (what a search does, without the exact-scan shortcuts)."""
    similarity = lists.centroids @ query
    rule = routing_rule(calibration, top_k, target, float(np.max(similarity)))
    return route(similarity, lists.sizes, min_docs=top_k, **rule)


def _values_at(by_target: dict[str, float | list[float]], target: float) -> float | list[float] | None:
    """The stored values of the smallest target at or above ``target``."""
    reaching = sorted((float(t), f) for t, f in by_target.items() if float(t) >= target - 1e-12)
    return reaching[0][1] if reaching else None


def _factor_at(by_target: dict[str, float | list[float]], target: float, position: int) -> float | None:
    factors = _values_at(by_target, target)
    if factors is None:
        return None
    return factors[min(position, len(factors) - 1)] if isinstance(factors, list) else float(factors)  # format 3: one bin
