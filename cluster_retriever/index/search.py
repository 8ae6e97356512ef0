"""One query over one snapshot: route, scan, check the hits against Chroma, make the nodes.

Routing picks the clusters (``routing``), the lists' kernel scans them (``scan``); this
module decides between routing and an exact scan, tops up when hits were deleted or no
longer match, and reads the winners' records in one Chroma read.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from llama_index.core.schema import NodeWithScore

from cluster_retriever.calibration import RouteRule, routed_fence, routing_rule
from cluster_retriever.errors import EmbeddingMismatchError, InvalidQueryError, StaleIndexError
from cluster_retriever.filters import MetadataColumns, filterable, restrict
from cluster_retriever.index.snapshot import Records, Snapshot
from cluster_retriever.index.state import LiveState
from cluster_retriever.routing import route
from cluster_retriever.store.chroma import ChromaStore, GenerationGone
from cluster_retriever.store.manifest import Manifest
from cluster_retriever.store.records import to_node
from cluster_retriever.types import SearchParams, SearchResult, SearchStats


def check_query_vector(manifest: Manifest, vector: np.ndarray) -> None:
    if vector.shape != (manifest.dimension,):
        raise EmbeddingMismatchError(
            f"Query embedding has shape {vector.shape}, the index stores {manifest.dimension}-d vectors "
            f"from {manifest.embed_model!r}: embed queries with that model."
        )
    if not np.all(np.isfinite(vector)) or not np.any(vector):
        raise InvalidQueryError("The query embedding has NaN, infinite or only zero values: check the embedding model's output.")


def probes(
    snapshot: Snapshot, query: np.ndarray, top_k: int, params: SearchParams, sizes: np.ndarray
) -> tuple[np.ndarray | None, bool]:
    """The clusters to scan (None: every match, exactly), and whether that is because the
    query lies far from every cluster."""
    lists = snapshot.lists
    adaptive = params.adaptive
    target = params.target_recall
    if params.mode == "flat" or (adaptive and int(sizes.sum()) * lists.dim <= params.exact_scan_max_floats):
        return None, False  # scanning every match costs no more than routing would
    similarity = lists.centroids @ query
    nearest = float(np.max(similarity))
    calibration = snapshot.manifest.calibration
    rule = routing_rule(calibration, top_k, target, nearest) if adaptive else RouteRule(budget_factor=None, band=None)
    if adaptive and rule["budget_factor"] is None and rule["band"] is None and target >= 1.0:
        return None, False  # exact search asked for
    fence = routed_fence(calibration, lists.fence, snapshot.manifest.query_fence)
    if adaptive and nearest < fence:
        return None, True  # far from every cluster (an off-topic query): routing cannot be trusted, scan exactly
    return route(similarity, sizes, params, min_docs=top_k, **rule), False


def search_live(live: LiveState, query: np.ndarray, top_k: int, params: SearchParams, with_nodes: bool) -> SearchResult:
    """``search_snapshot`` on the live snapshot, read-counted so its generation is not dropped
    under it; when another process re-clustered meanwhile, follow it and search once more."""
    live.maybe_refresh()
    for attempt in range(2):
        snapshot = live.snapshot
        with live.readers.reading(snapshot.manifest.generation):
            try:
                result = search_snapshot(live.store, snapshot, query, top_k, params, with_nodes)
                live.watch.saw(result.stats, calibrated_on_queries=snapshot.manifest.query_fence is not None)
                return result
            except GenerationGone:
                if attempt:
                    break
        live.sync(compare_metadata=True)  # another process re-clustered: follow it
    raise StaleIndexError(
        f"Index {live.store.name!r} was rebuilt by another writer while this query ran, twice: "
        f"reopen it with ClusterIndex.open(...)."
    )


def search_snapshot(
    store: ChromaStore, snapshot: Snapshot, query: np.ndarray, top_k: int, params: SearchParams, with_nodes: bool
) -> SearchResult:
    """The exact top-k of ``query`` inside the probed clusters, among what ``params``'
    restriction admits now in Chroma."""
    lists = snapshot.lists
    if len(lists) == 0:
        return SearchResult([], SearchStats(0, 0, 0.0, True))
    restriction = params.restriction
    mask = lists.mask(restriction)
    sizes = lists.sizes_within(mask)
    clusters, far = probes(snapshot, query, top_k, params, sizes)
    restricted = mask is not None
    want = top_k
    while True:
        result = lists.scan(query, clusters, want, mask, params.scan_kernel, spill=params.mode == "routed")
        ids, scores, rows = result.ids, [float(score) for score in result.scores], result.rows.tolist()
        records = fetch(store, snapshot, ids, with_nodes, restricted)
        if records is not None:  # drop records deleted meanwhile, and any the filter no longer admits
            kept = [i for i, doc_id in enumerate(ids) if doc_id in records]
            if restricted and kept:
                found = np.asarray([ids[i] for i in kept], dtype=object)
                fresh = restrict(MetadataColumns([filterable(records[ids[i]][1]) for i in kept]), found, restriction)
                kept = [i for i, ok in zip(kept, fresh.tolist(), strict=True) if ok]
            ids, scores, rows = [ids[i] for i in kept], [scores[i] for i in kept], [rows[i] for i in kept]
        if len(ids) >= top_k or want >= result.n_scanned:
            break
        want = min(result.n_scanned, 2 * want)  # top up from further candidates
    ids, scores, rows = ids[:top_k], scores[:top_k], rows[:top_k]
    nonempty = int(np.count_nonzero(sizes))
    probed = nonempty if clusters is None else len(clusters)
    exact = clusters is None or len(clusters) == nonempty
    stats = SearchStats(probed, result.n_scanned, result.n_scanned / len(lists), bool(exact), far)
    if not with_nodes or records is None:
        return SearchResult([], stats, ids, scores)
    return SearchResult(hits(records, ids, scores, lists.labels[rows].tolist()), stats, ids, scores)


def hits(records: Records, ids: list[str], scores: list[float], clusters: list[int]) -> list[NodeWithScore]:
    """The returned records as nodes (made only for what is returned), each one's cluster id in
    its metadata."""
    return [
        NodeWithScore(node=to_node(doc_id, *records[doc_id], cluster_id=cluster), score=score)
        for doc_id, score, cluster in zip(ids, scores, clusters, strict=True)
    ]


def fetch(store: ChromaStore, snapshot: Snapshot, ids: list[str], with_nodes: bool, restricted: bool) -> Records | None:
    """The records of the scan's hits, in one read: documents and metadata for nodes, the
    metadata alone for a filtered ids-only query (its filter is checked on what Chroma holds
    now), nothing for an unfiltered ids-only query (None)."""
    if not (with_nodes or restricted):
        return None
    if not ids:
        return {}
    cached = snapshot.records
    if cached is not None and not restricted:
        return {doc_id: cached[doc_id] for doc_id in ids if doc_id in cached}
    found: dict[str, tuple[str, dict[str, Any]]]
    found = store.fetch(snapshot.manifest.data_collection, ids, documents=with_nodes and cached is None)
    if cached is not None:  # texts from the cache, metadata fresh from Chroma
        found = {doc_id: (cached[doc_id][0], meta) for doc_id, (_, meta) in found.items() if doc_id in cached}
    return found
