"""The calibration delivers its target, not more: on queries like the ones it was calibrated on,
routing at the calibrated budget finds about ``target_recall`` of exact search's top 10."""

import numpy as np
import pytest
from llama_index.core import Document

from cluster_retriever import ClusterIndex
from cluster_retriever.calibration import budget_factor, calibrate
from cluster_retriever.clustering import fit_clusters
from cluster_retriever.errors import EmbeddingMismatchError
from cluster_retriever.routing import route
from cluster_retriever.scan.lists import InvertedLists, outlier_fence
from cluster_retriever.store.clients import collection_names, make_client
from cluster_retriever.types import SearchParams
from tests.hash_embedding import HashEmbedding


def unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def world():
    """Documents around 60 topics; queries further from their topic than documents are."""
    rng = np.random.default_rng(7)
    topics = rng.normal(size=(60, 32))
    vectors = unit(topics[rng.integers(0, 60, 6000)] + rng.normal(scale=0.9, size=(6000, 32)))
    queries = unit(topics[rng.integers(0, 60, 600)] + rng.normal(scale=1.4, size=(600, 32)))
    fitted = fit_clusters(vectors, 120, 0)
    lists = InvertedLists(fitted.centroids, [str(i) for i in range(6000)], vectors, fitted.labels)
    return lists, vectors, fitted.labels, queries


def delivered(world, calibration, queries: np.ndarray, target: float) -> float:
    lists, vectors, labels, _ = world
    factor = budget_factor(calibration, 10, target)
    found = 0
    for query in queries:
        probed = route(lists.centroids @ query, lists.sizes, min_docs=10, budget_factor=factor)
        exact = np.argsort(-(vectors @ query))[:10]
        found += int(np.isin(labels[exact], probed).sum())
    return found / (10 * len(queries))


@pytest.mark.parametrize("target", [0.9, 0.95])
def test_calibrated_on_real_queries_it_delivers_the_target_on_queries_like_them(world, target):
    queries = world[3]
    on_queries = calibrate(world[0], queries=queries[:300])
    held_out = delivered(world, on_queries, queries[300:], target)
    assert abs(held_out - target) <= 0.025, held_out
    # The documents' own calibration hits its target on document-like queries...
    lists, vectors = world[0], world[1]
    on_documents = calibrate(lists, seed=1)
    assert abs(delivered(world, on_documents, vectors[::20], target) - target) <= 0.025
    # ...and misses it on these harder queries: why real queries are worth calibrating on.
    assert delivered(world, on_documents, queries[300:], target) < held_out - 0.01


def test_index_calibrate_commits_a_new_calibration_that_reopens(tmp_path):
    words = [f"w{i}" for i in range(400)]
    rng = np.random.default_rng(3)
    texts = [" ".join(rng.choice(words[(i % 20) * 20 : (i % 20) * 20 + 20], 6)) for i in range(600)]
    docs = [Document(text=text, id_=f"doc{i}") for i, text in enumerate(texts)]
    model = HashEmbedding()
    index = ClusterIndex.build(docs, path=str(tmp_path), embed_model=model, n_clusters=12, show_progress=False)
    before = index.manifest
    questions = [" ".join(rng.choice(words, 3)) for _ in range(40)]
    index.calibrate(questions)
    after = index.manifest
    assert after.version == before.version + 1 and after.calibration != before.calibration
    vectors = np.asarray([model.get_query_embedding(q) for q in questions], dtype=np.float32)
    assert after.calibration == calibrate(index.lists, queries=unit(vectors))
    # Off-topic queries are judged against these queries' nearest centroids, not the documents'.
    assert after.query_fence == outlier_fence(np.max(unit(vectors) @ index.lists.centroids.T, axis=1))
    index.close()
    reopened = ClusterIndex.open(path=str(tmp_path), embed_model=model)
    assert reopened.manifest.calibration == after.calibration
    with pytest.raises(ValueError, match="at least 20"):
        reopened.calibrate(questions[:5])
    with pytest.raises(TypeError, match="query texts or an array"):
        reopened.calibrate([1, 2, 3])
    with pytest.raises(EmbeddingMismatchError, match="embed queries with that model"):
        reopened.calibrate(np.ones((30, 7), dtype=np.float32))
    reopened.recluster(random_state=1)  # new centroids, recalibrated on the same stored queries
    again = reopened.manifest
    assert again.generation != after.generation and not np.allclose(reopened.lists.centroids[:1], index.lists.centroids[:1])
    assert again.calibration == calibrate(reopened.lists, queries=unit(vectors)) != calibrate(reopened.lists, seed=1)
    assert again.query_fence == outlier_fence(np.max(unit(vectors) @ reopened.lists.centroids.T, axis=1))
    reopened.close()
    # ...from a handle opened afresh too: the queries are in the store, not in a handle.
    third = ClusterIndex.open(path=str(tmp_path), embed_model=model)
    third.recluster(random_state=2)
    assert third.manifest.calibration == calibrate(third.lists, queries=unit(vectors))
    # They live and go with their generation, and are none of the app's collections.
    client = third.store.client
    kept = [c.name for c in client.list_collections() if c.name.endswith(".queries")]
    assert kept == [f"{third.store.name}.g{third.manifest.generation}.queries"]
    assert not [name for name in collection_names(client) if name.endswith(".queries")]
    third.close()


class OtherHashEmbedding(HashEmbedding):
    """The same vectors under another model's name: queries embedded by HashEmbedding don't fit it."""

    def __init__(self) -> None:
        super(HashEmbedding, self).__init__(model_name="test-hash-other")


def test_a_rebuild_with_another_embedding_model_drops_the_stored_queries(tmp_path):
    texts = [f"topic {i % 10} note {i} " + " ".join(f"w{(i * 7 + j) % 97}" for j in range(5)) for i in range(300)]
    docs = [Document(text=text, id_=f"doc{i}") for i, text in enumerate(texts)]
    index = ClusterIndex.build(docs, path=str(tmp_path), embed_model=HashEmbedding(), n_clusters=8, show_progress=False)
    index.calibrate([f"w{i} w{i + 1} topic {i % 10}" for i in range(30)])
    assert index.manifest.query_fence is not None
    index.close()
    other = OtherHashEmbedding()
    rebuilt = ClusterIndex.build(docs, path=str(tmp_path), embed_model=other, n_clusters=8, show_progress=False)
    assert rebuilt.manifest.query_fence is None and rebuilt.manifest.calibration == calibrate(rebuilt.lists, seed=0)
    assert rebuilt.store.read_queries(rebuilt.manifest.generation) is None
    rebuilt.close()


def test_queries_far_from_every_cluster_are_counted_and_warned_of_once(tmp_path, caplog):
    """A query whose nearest centroid lies below the outlier fence is scanned exactly and its
    stats say why; when a quarter of a handle's first 100 routed queries are such, one warning
    names the fix, and after calibrating on queries like them they route again. The app's own
    Chroma collection, adopted."""
    rng = np.random.default_rng(5)
    topics = rng.normal(size=(40, 32))
    vectors = unit(topics[rng.integers(0, 40, 3000)] + rng.normal(scale=0.3, size=(3000, 32)))
    client = make_client(str(tmp_path))
    app = client.get_or_create_collection("app", embedding_function=None, configuration={"hnsw": {"space": "cosine"}})
    app.add(ids=[f"doc{i}" for i in range(3000)], embeddings=vectors, documents=[f"text {i}" for i in range(3000)])
    model = HashEmbedding()
    index = ClusterIndex.from_vector_store(app, client=client, embed_model=model, name="watched", show_progress=False)
    routed = SearchParams(exact_scan_max_floats=0)  # a small index is otherwise scanned exactly anyway
    doc_like = [index.search(v, 10, routed).stats for v in vectors[:100]]
    assert sum(s.far_from_clusters for s in doc_like) <= 3 and "far from every cluster" not in caplog.text  # outliers only
    index.close()
    far = unit(rng.normal(size=(120, 32)))  # off every topic
    fresh = ClusterIndex.open("watched", client=client, embed_model=model)  # each handle watches its own first queries
    results = [fresh.search(v, 10, routed) for v in far]
    assert all(r.stats.far_from_clusters and r.stats.exact for r in results)
    assert all(r.ids == fresh.search(v, 10, SearchParams(mode="flat")).ids for r, v in zip(results, far, strict=True))
    assert caplog.text.count("far from every cluster") == 1 and "index.calibrate(queries)" in caplog.text
    fresh.calibrate(far[:60])
    calibrated = [fresh.search(v, 10, routed).stats for v in far[60:]]
    assert sum(s.far_from_clusters for s in calibrated) <= 3  # the fence now comes from such queries
    fresh.close()
