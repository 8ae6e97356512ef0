"""The lexical baseline and the hybrid: BM25 through ``bm25s`` and reciprocal rank fusion.

BM25 runs at bm25s's defaults (Lucene's variant, k1 = 1.5, b = 0.75) over bm25s's own
tokenization: lower-cased, words of two or more letters or digits (``\\b\\w\\w+\\b``),
English stop words removed, no stemming.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import bm25s

RRF_K = 60  # the constant of Cormack et al. (2009), as most fusion implementations use


class BM25Ranker:
    """BM25 over a fixed corpus; ``rank`` gives each query's top ``depth`` as {doc_id: score}."""

    def __init__(self, doc_ids: Sequence[str], texts: Sequence[str]) -> None:
        self.doc_ids = list(doc_ids)
        self.model = bm25s.BM25()
        self.model.index(bm25s.tokenize(list(texts), stopwords="en", show_progress=False), show_progress=False)

    def rank(self, queries: Mapping[str, str], depth: int = 100) -> dict[str, dict[str, float]]:
        qids = list(queries)
        tokens = bm25s.tokenize([queries[q] for q in qids], stopwords="en", show_progress=False)
        k = min(depth, len(self.doc_ids))
        rows, scores = self.model.retrieve(tokens, k=k, show_progress=False)
        return {
            qid: {self.doc_ids[int(row)]: float(score) for row, score in zip(rows[i], scores[i], strict=True) if score > 0}
            for i, qid in enumerate(qids)
        }


def reciprocal_rank_fusion(*rankings: Mapping[str, float], depth: int = 100, k: int = RRF_K) -> dict[str, float]:
    """Fuse rankings ({doc_id: score}, higher better) by sum of 1 / (k + rank)."""
    fused: dict[str, float] = {}
    for ranking in rankings:
        for rank, doc_id in enumerate(sorted(ranking, key=lambda d: -ranking[d]), 1):
            fused[doc_id] = fused.get(doc_id, 0.0) + 1.0 / (k + rank)
    top = sorted(fused, key=lambda d: -fused[d])[:depth]
    return {doc_id: fused[doc_id] for doc_id in top}
