import numpy as np
import pytest

from cluster_retriever import ClusterRetriever, tune_n_probe
from cluster_retriever.errors import EmbeddingMismatchError, EmptyQueryError

pytestmark = pytest.mark.slow

QUERIES = ["go-to-market launch messaging", "roadmap and sprint planning", "croissant lamination", "Spark ETL jobs", "pricing"]


def routed_recall(index, queries, n_probe, top_k):
    flat = ClusterRetriever(index, similarity_top_k=top_k, mode="flat")
    routed = ClusterRetriever(index, similarity_top_k=top_k, n_probe=n_probe)
    found = []
    for query in queries:
        exact = {hit.node.node_id for hit in flat.retrieve(query)}
        found.append(len(exact & {hit.node.node_id for hit in routed.retrieve(query)}) / len(exact))
    return float(np.mean(found))


def test_picks_the_smallest_probe_count_that_reaches_the_target(index):
    tuning = tune_n_probe(index, QUERIES, target_recall=0.9, top_k=8)
    recalls = [point.recall for point in tuning.curve]
    assert recalls == sorted(recalls)  # nearest-first probe sets only grow
    assert [point.n_probe for point in tuning.curve] == [1, 2, 3, 4][: len(tuning.curve)]
    if tuning.n_probe is None:
        assert all(point.recall < 0.9 for point in tuning.curve[:-1])
    else:
        first = next(point for point in tuning.curve if point.recall >= 0.9)
        assert tuning.n_probe == first.n_probe
        # the retriever at that setting finds what the tuning measured
        assert routed_recall(index, QUERIES, tuning.n_probe, 8) == pytest.approx(first.recall)
    assert 0.0 < tuning.default.fraction_scanned <= 1.0 and tuning.default.n_probe is None


def test_probing_every_cluster_is_exact(index):
    tuning = tune_n_probe(index, QUERIES, target_recall=1.0, top_k=20)
    assert tuning.curve[-1].recall == 1.0
    assert tuning.n_probe is None or tuning.n_probe < index.n_clusters


def test_query_vectors_are_accepted_and_checked(index, embed_model):
    vectors = np.array([embed_model.get_query_embedding(query) for query in QUERIES])
    from_text = tune_n_probe(index, QUERIES, target_recall=0.9)
    from_vectors = tune_n_probe(index, vectors * 3.0, target_recall=0.9)  # normalised on the way in
    assert [p.recall for p in from_vectors.curve] == pytest.approx([p.recall for p in from_text.curve])
    with pytest.raises(EmbeddingMismatchError):
        tune_n_probe(index, np.ones((2, 64)))


@pytest.mark.parametrize("queries", [[], ["", "   "]])
def test_no_usable_query(index, queries):
    with pytest.raises(EmptyQueryError):
        tune_n_probe(index, queries)


@pytest.mark.parametrize("target", [0.0, 1.5])
def test_target_out_of_range(index, target):
    with pytest.raises(ValueError, match="target_recall"):
        tune_n_probe(index, QUERIES, target_recall=target)
