import numpy as np
import pytest

from cluster_retriever.clustering import assign, choose_n_clusters, cluster_top_terms, fit_clusters, resolve_n_clusters


def blobs(n_per: int = 30, dim: int = 16, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centers = np.eye(dim)[:3] * 5
    points = np.concatenate([c + rng.normal(size=(n_per, dim)) * 0.3 for c in centers])
    return points / np.linalg.norm(points, axis=1, keepdims=True), np.repeat(np.arange(3), n_per)


def test_fit_recovers_separated_groups_and_is_reproducible():
    vectors, truth = blobs()
    first = fit_clusters(vectors, 3, random_state=7)
    second = fit_clusters(vectors, 3, random_state=7)
    assert np.array_equal(first.labels, second.labels)
    # each true group maps to exactly one cluster
    for group in range(3):
        assert len(set(first.labels[truth == group])) == 1
    assert np.allclose(np.linalg.norm(first.centroids, axis=1), 1.0, atol=1e-5)


def test_assign_matches_labels_of_fit():
    vectors, _ = blobs()
    clustering = fit_clusters(vectors, 3)
    assert np.array_equal(assign(vectors, clustering.centroids), clustering.labels)


def test_assign_in_chunks_equals_full_argmax(monkeypatch):
    import cluster_retriever.clustering as clustering

    rng = np.random.default_rng(3)
    vectors, centroids = rng.normal(size=(103, 8)), rng.normal(size=(5, 8))
    monkeypatch.setattr(clustering, "ASSIGN_CHUNK", 10)  # 11 chunks, the last one short
    assert np.array_equal(assign(vectors, centroids), np.argmax(vectors @ centroids.T, axis=1))
    assert assign(vectors[:0], centroids).shape == (0,)


def test_minibatch_path_above_threshold(monkeypatch):
    import cluster_retriever.clustering as clustering

    monkeypatch.setattr(clustering, "MINIBATCH_THRESHOLD", 10)
    vectors, truth = blobs()
    result = clustering.fit_clusters(vectors, 3)
    assert len(set(zip(result.labels, truth, strict=False))) == 3


def test_auto_grows_sublinearly():
    assert choose_n_clusters(1) == 1
    assert choose_n_clusters(10) == 2  # at least 4 documents per cluster on average
    assert choose_n_clusters(1460) == 199
    assert choose_n_clusters(100_000) / choose_n_clusters(10_000) == pytest.approx(np.sqrt(10), rel=0.01)


@pytest.mark.parametrize("bad", [0, -1, 2.5, "many", True])
def test_invalid_n_clusters(bad):
    with pytest.raises(ValueError, match="n_clusters"):
        resolve_n_clusters(bad, 10)


def test_more_clusters_than_documents_says_what_to_do():
    with pytest.raises(ValueError, match=r"larger than the number of documents \(3\).*n_clusters <= 3"):
        resolve_n_clusters(5, 3)


def test_empty_corpus():
    with pytest.raises(ValueError, match="empty"):
        resolve_n_clusters("auto", 0)


def test_top_terms_describe_each_cluster():
    texts = ["apple banana fruit salad", "banana apple smoothie fruit", "rocket engine launch orbit", "orbit rocket satellite"]
    terms = cluster_top_terms(texts, np.array([0, 0, 1, 1]), 3, n_terms=2)
    assert set(terms[0]) <= {"apple", "banana", "fruit"} and set(terms[1]) <= {"rocket", "orbit"}
    assert terms[2] == []
