"""The first stage the reranking benchmarks rerank: all-MiniLM-L6-v2, exact search."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cluster_retriever.datasets import BeirDataset
from cluster_retriever.embeddings import embed_query, embed_texts, resolve_embed_model

CISI = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "cisi"


def first_stage(data: BeirDataset, depth: int) -> dict[str, list[str]]:
    """Each judged query's top ``depth`` document ids, best first."""
    model = resolve_embed_model()
    vectors = embed_texts(model, [d.get_content(metadata_mode="embed") for d in data.corpus], show_progress=True)
    ids = [d.doc_id for d in data.corpus]
    runs = {}
    for qid, text in data.judged_queries.items():
        scores = vectors @ embed_query(model, text)
        runs[qid] = [ids[i] for i in np.argsort(-scores)[:depth]]
    return runs
