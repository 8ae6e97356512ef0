"""The quality guard on CISI (real human judgments), at the defaults and with routing forced."""

import numpy as np
import pytest

from cluster_retriever import ClusterIndex, ClusterRetriever
from cluster_retriever.datasets import load_beir
from cluster_retriever.evaluation.metrics import ir_metrics

from .conftest import CISI, requires_cisi

pytestmark = [pytest.mark.slow, requires_cisi]


def evaluate(index, data, **kwargs):
    retriever = ClusterRetriever(index, similarity_top_k=100, **kwargs)
    run, scanned, top10, exact = {}, [], {}, []
    for qid, text in data.judged_queries.items():
        result = retriever.search(text)
        run[qid] = {h.node.node_id: h.score for h in result.hits}
        top10[qid] = [h.node.node_id for h in result.hits[:10]]
        scanned.append(result.stats.fraction_scanned)
        exact.append(result.stats.exact)
    return ir_metrics(data.qrels, run, ["ndcg@10", "recall@100"]), float(np.mean(scanned)), top10, all(exact)


def test_defaults_scan_small_corpora_exactly_and_calibrated_routing_keeps_its_promise(tmp_path, embed_model):
    data = load_beir(CISI)
    index = ClusterIndex.build(data.corpus, path=tmp_path, embed_model=embed_model, show_progress=False)
    flat, _, flat_top10, _ = evaluate(index, data, mode="flat")
    assert flat["ndcg@10"] == pytest.approx(0.419, abs=0.005)
    # 1,460 x 384-d is below the exact-scan crossover: the default is exact search, and says so
    default, scanned, _, exact = evaluate(index, data)
    assert exact and scanned == 1.0 and default == flat
    # the calibrated routing itself, with the shortcut off
    index.exact_scan_max_floats = 0
    routed, scanned, top10, exact = evaluate(index, data)
    recall_vs_exact = np.mean([len(set(top10[q]) & set(flat_top10[q])) / 10 for q in top10])
    assert not exact and scanned < 0.6
    assert recall_vs_exact >= 0.95  # the promise, on real queries
    assert routed["ndcg@10"] >= 0.99 * flat["ndcg@10"]
    assert routed["recall@100"] >= 0.98 * flat["recall@100"]


def test_calibrated_routing_keeps_its_promise_on_bbc_news_too(tmp_path, embed_model):
    """A second judged dataset nothing was tuned on: BBC News headlines -> articles (600 characters)."""
    from cluster_retriever.datasets import load_bbc_news

    data = load_bbc_news()
    for doc in data.corpus:
        doc.set_content(doc.text[:600])
    data.queries = {qid: data.queries[qid] for qid in sorted(data.queries)[::4]}  # 523 of 2,092 headlines
    index = ClusterIndex.build(data.corpus, path=tmp_path, embed_model=embed_model, show_progress=False)
    flat, _, flat_top10, _ = evaluate(index, data, mode="flat")
    index.exact_scan_max_floats = 0  # measure the routing, not the exact-scan shortcut
    routed, scanned, top10, exact = evaluate(index, data)
    recall_vs_exact = np.mean([len(set(top10[q]) & set(flat_top10[q])) / 10 for q in top10])
    assert not exact and scanned < 0.6 and recall_vs_exact >= 0.95
    assert routed["ndcg@10"] >= 0.99 * flat["ndcg@10"]
    assert routed["recall@100"] >= 0.98 * flat["recall@100"]
