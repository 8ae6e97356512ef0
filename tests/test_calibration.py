"""The calibration delivers its target, not more: on queries like the ones it was calibrated on,
routing at the calibrated budget finds about ``target_recall`` of exact search's top 10."""

import numpy as np
import pytest
from llama_index.core import Document

from cluster_retriever import ClusterIndex, calibration
from cluster_retriever.calibration import (
    CROP_WORDS,
    Routes,
    band,
    budget_factor,
    calibrate,
    calibrated_route,
    calibration_queries,
    pseudo_query_rows,
    query_like_crops,
    routed_fence,
)
from cluster_retriever.clustering import fit_clusters
from cluster_retriever.errors import EmbeddingMismatchError
from cluster_retriever.index.writer import crop_queries
from cluster_retriever.routing import route
from cluster_retriever.scan.lists import InvertedLists, outlier_fence
from cluster_retriever.store.clients import collection_names, make_client
from cluster_retriever.types import SearchParams
from tests.hash_embedding import DIM, HashEmbedding


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
    found = 0
    for query in queries:
        probed = calibrated_route(lists, calibration, query, 10, target)
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
    # ...and, probing the clusters within its similarity band, on these harder queries too,
    # where a budget counted in documents (what the calibration stored before bands) misses.
    assert abs(delivered(world, on_documents, queries[300:], target) - target) <= 0.025
    assert delivered(world, budgets_only(on_documents), queries[300:], target) < held_out - 0.01


def budgets_only(table: calibration.Calibration) -> calibration.Calibration:
    """A calibration as stored before the bands (budget factors only), as older indexes have it."""
    return {key: value for key, value in table.items() if key != calibration.BAND}


def test_a_query_further_from_every_cluster_gets_the_budget_of_queries_as_far(world, monkeypatch):
    """The budget is calibrated per bin of the nearest-centroid similarity: never smaller for a
    further query, and on queries further from the clusters than documents are, the documents'
    own calibration comes nearer its target than one budget for all (one bin) does."""
    lists, vectors, _, queries = world
    binned = calibrate(lists, seed=1)
    edges = binned["nearest"]["edges"]
    assert isinstance(edges, list) and len(edges) == calibration.NEAREST_BINS - 1 and edges == sorted(edges)
    for depth in ("10", "100"):
        for target, factors in binned[depth].items():
            assert isinstance(factors, list) and factors == sorted(factors, reverse=True), (depth, target)
    nearer, further = 0.9, float(edges[0]) - 0.01
    assert budget_factor(binned, 10, 0.95, further) > budget_factor(binned, 10, 0.95, nearer)
    assert all(width >= 0 for width in binned[calibration.BAND]["0.95"]) and band(binned, 0.95, nearer) > 0
    assert budget_factor(binned, 10, 0.95) == budget_factor(binned, 10, 0.95, -1.0)  # unknown: the furthest bin's
    assert budget_factor({"10": {"0.95": 2.5}}, 10, 0.95, 0.9) == 2.5  # a manifest written before the bins
    assert band({"10": {"0.95": [2.5]}}, 0.95, 0.9) is None  # ...or before the bands: its budget routes
    monkeypatch.setattr(calibration, "NEAREST_BINS", 1)
    single = budgets_only(calibrate(lists, seed=1))
    far, doc_like = queries[300:], vectors[::20]
    assert delivered(world, single, far, 0.95) < delivered(world, budgets_only(binned), far, 0.95) <= 0.95 + 0.025
    assert abs(delivered(world, budgets_only(binned), doc_like, 0.95) - 0.95) <= 0.025


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
    asked = calibration_queries(model, questions)  # the unit rows the index stored (bands are float sums of them)
    assert after.calibration == calibrate(index.lists, queries=asked)
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
    assert again.calibration == calibrate(reopened.lists, queries=asked) != calibrate(reopened.lists, seed=1)
    assert again.query_fence == outlier_fence(np.max(unit(vectors) @ reopened.lists.centroids.T, axis=1))
    reopened.close()
    # ...from a handle opened afresh too: the queries are in the store, not in a handle.
    third = ClusterIndex.open(path=str(tmp_path), embed_model=model)
    third.recluster(random_state=2)
    assert third.manifest.calibration == calibrate(third.lists, queries=asked)
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
    crops = crop_queries({doc.id_: doc.text for doc in docs}, rebuilt.lists, 0, other)
    assert crops is not None  # the documents have text: a sentence of each joins them
    assert rebuilt.manifest.query_fence is None
    assert rebuilt.manifest.calibration == calibrate(rebuilt.lists, seed=0, crops=crops)
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


def test_a_crop_is_one_sentence_of_its_document():
    texts = [
        "Short one. The second sentence is here! And a third one? Yes it is.",
        "no punctuation at all in this single sentence of twelve plain words here",
        " ".join(f"w{i}" for i in range(80)) + ". Tail sentence with words.",
    ]
    crops = query_like_crops(texts, seed=4)
    assert crops == query_like_crops(texts, seed=4) != query_like_crops(texts, seed=5)
    for text, crop in zip(texts, crops, strict=True):
        assert crop and crop in text and len(crop.split()) <= CROP_WORDS
    assert crops[0] in ("The second sentence is here!", "And a third one?", "Yes it is.")  # "Short one." is too short
    assert len(crops[1].split()) == 6  # one sentence: half its words


def sentence_texts() -> list[str]:
    """900 texts of four 5-word sentences, on 30 topics of 20 words each."""
    rng = np.random.default_rng(11)
    words = [f"w{i}" for i in range(600)]
    return [". ".join(" ".join(rng.choice(words[(i % 30) * 20 : (i % 30) * 20 + 20], 5)) for _ in range(4)) for i in range(900)]


def test_crops_join_the_calibration_only_when_they_find_their_documents(tmp_path):
    """Documents with text: a sentence of each, embedded as a query by the index's model, joins
    the pseudo-queries. Vectors that are not the model's embeddings of their texts (shuffled
    here), or records without text, leave the documents' own calibration."""
    texts, model = sentence_texts(), HashEmbedding()
    docs = [Document(text=text, id_=f"doc{i}") for i, text in enumerate(texts)]
    index = ClusterIndex.build(docs, path=str(tmp_path / "own"), embed_model=model, n_clusters=30, show_progress=False)
    lists = index.lists
    by_id = {f"doc{i}": text for i, text in enumerate(texts)}
    crops = crop_queries(by_id, lists, 0, model)
    assert crops is not None and len(crops[0]) == len(pseudo_query_rows(len(lists), 0))
    rows, vectors = crops
    assert index.manifest.calibration == calibrate(lists, seed=0, crops=crops) != calibrate(lists, seed=0)
    shuffled = (rows, vectors[np.random.default_rng(0).permutation(len(rows))])
    assert calibrate(lists, seed=0, crops=shuffled) == calibrate(lists, seed=0)
    # The off-topic fence: the lower of the crops' and the documents' own, where crops were measured.
    nearest = np.max(np.concatenate([lists.vectors[rows], vectors]) @ lists.centroids.T, axis=1)
    fence = min(outlier_fence(nearest[len(rows) :]), outlier_fence(nearest[: len(rows)]))
    assert index.manifest.calibration["nearest"]["fence"] == fence < lists.fence
    assert "fence" not in calibrate(lists, seed=0)["nearest"]  # documents alone: the lists' own fence holds
    index.close()
    client = make_client(str(tmp_path / "app"))
    app = client.get_or_create_collection("app", embedding_function=None, configuration={"hnsw": {"space": "cosine"}})
    app.add(ids=[f"doc{i}" for i in range(900)], embeddings=lists.vectors_of([f"doc{i}" for i in range(900)]))
    adopted = ClusterIndex.from_vector_store(app, client=client, embed_model=model, name="vectors", show_progress=False)
    stored = {doc_id: text for doc_id, (text, _) in adopted.store.fetch("app", list(adopted.lists.ids)).items()}
    assert crop_queries(stored, adopted.lists, 0, model) is None  # vectors only: nothing to crop
    assert adopted.manifest.calibration == calibrate(adopted.lists, seed=0)
    adopted.close()
    texted = client.get_or_create_collection("texted", embedding_function=None, configuration={"hnsw": {"space": "cosine"}})
    texted.add(ids=list(by_id), embeddings=lists.vectors_of(list(by_id)), documents=list(by_id.values()))
    with_texts = ClusterIndex.from_vector_store(texted, client=client, embed_model=model, name="texted", show_progress=False)
    cropped = crop_queries(by_id, with_texts.lists, 0, model)  # the app's texts, read from its collection
    assert (
        with_texts.manifest.calibration
        == calibrate(with_texts.lists, seed=0, crops=cropped)
        != calibrate(with_texts.lists, seed=0)
    )
    with_texts.recluster(random_state=1)  # and again at a re-clustering
    cropped = crop_queries(by_id, with_texts.lists, 1, model)
    assert (
        with_texts.manifest.calibration
        == calibrate(with_texts.lists, seed=1, crops=cropped)
        != calibrate(with_texts.lists, seed=1)
    )
    with_texts.close()


def test_a_query_as_far_as_the_crops_is_routed_not_scanned_as_off_topic(tmp_path):
    """Sentences read further from the clusters than documents: a query as far out as the
    calibration's crops went is routed on their budget, where an index of the same vectors
    without texts (no crops) scans it exactly as off-topic; a fence calibrated on real queries
    overrides both."""
    texts, model = sentence_texts(), HashEmbedding()
    docs = [Document(text=text, id_=f"doc{i}") for i, text in enumerate(texts)]
    index = ClusterIndex.build(docs, path=str(tmp_path / "own"), embed_model=model, n_clusters=30, show_progress=False)
    crops_fence = index.manifest.calibration["nearest"]["fence"]
    assert routed_fence(index.manifest.calibration, index.lists.fence) == crops_fence < index.lists.fence
    assert routed_fence(index.manifest.calibration, index.lists.fence, query_fence=0.5) == 0.5
    assert routed_fence({"10": {"0.95": 2.5}}, 0.3) == 0.3  # a manifest written before crops: the documents' fence
    client = make_client(str(tmp_path / "app"))
    app = client.get_or_create_collection("app", embedding_function=None, configuration={"hnsw": {"space": "cosine"}})
    ids = [f"doc{i}" for i in range(900)]
    app.add(ids=ids, embeddings=index.lists.vectors_of(ids))
    vectors_only = ClusterIndex.from_vector_store(app, client=client, embed_model=model, name="vectors", show_progress=False)
    assert "fence" not in vectors_only.manifest.calibration["nearest"]
    probes = unit(np.random.default_rng(11).normal(size=(400, DIM)))
    nearest = [np.max(probes @ i.lists.centroids.T, axis=1) for i in (index, vectors_only)]
    between = probes[(nearest[0] > crops_fence) & (nearest[1] < vectors_only.lists.fence)]
    assert len(between) >= 20, len(between)
    routed = SearchParams(exact_scan_max_floats=0)
    assert not any(index.search(v, 10, routed).stats.far_from_clusters for v in between)
    assert all(vectors_only.search(v, 10, routed).stats.far_from_clusters for v in between)
    index.close()
    vectors_only.close()


def test_the_calibration_measures_what_route_probes():
    """``Routes`` (the calibration's many-queries-at-once form of ``route``) probes, for every
    budget and band, exactly the clusters ``route`` itself does: what is calibrated is what runs."""
    rng = np.random.default_rng(5)
    sizes = rng.integers(0, 40, 300)  # empty clusters among them
    similarity = rng.uniform(-0.2, 0.9, (64, 300))
    similarity[:, sizes == 0] = -np.inf  # as the calibration hands them over
    neighbours = rng.integers(0, 300, (64, 10))
    routes = Routes(similarity, sizes, neighbours)
    nearer = similarity[:, None, :] > np.take_along_axis(similarity, neighbours, axis=1)[:, :, None]
    assert routes.before.tolist() == (nearer * sizes).sum(axis=2).tolist()  # documents before each neighbour's cluster
    for min_docs in (10, 100):
        for factor, width in [
            (None, None),
            (0.0, None),
            (0.3, None),
            (2.5, None),
            (None, 0.0),
            (None, 0.05),
            (None, 0.4),
            (0.3, 0.05),
            (2.5, 0.4),
        ]:
            expected = [len(route(row, sizes, min_docs=min_docs, budget_factor=factor, band=width)) for row in similarity]
            assert routes.probed(factor, width, min_docs).tolist() == expected, (min_docs, factor, width)
            found = [
                np.isin(wanted, route(row, sizes, min_docs=min_docs, budget_factor=factor, band=width)).mean()
                for row, wanted in zip(similarity, neighbours, strict=True)
            ]
            assert routes.recall(factor, width, min_docs) == pytest.approx(np.mean(found))


def test_the_band_is_interpolated_between_the_bins_by_the_querys_own_similarity(world):
    """A query's band follows its nearest-centroid similarity between the bins' medians (a step
    per bin jumps at the edges), the end bins' beyond them; a calibration stored before the
    medians keeps its steps."""
    lists = world[0]
    table = calibrate(lists, seed=1)
    centers, edges = table["nearest"]["centers"], table["nearest"]["edges"]
    values = table[calibration.BAND]["0.95"]
    assert isinstance(centers, list) and isinstance(edges, list) and isinstance(values, list)
    assert len(centers) == len(values) == len(edges) + 1 and centers == sorted(centers)
    for center, value in zip(centers, values, strict=True):
        assert band(table, 0.95, center) == pytest.approx(value)
    middle = (centers[1] + centers[2]) / 2
    assert band(table, 0.95, middle) == pytest.approx((values[1] + values[2]) / 2)
    assert band(table, 0.95, centers[0] - 0.5) == pytest.approx(values[0])  # beyond the ends: the end bins'
    assert band(table, 0.95, centers[-1] + 0.5) == pytest.approx(values[-1])
    assert band(table, 0.95) == pytest.approx(values[0])  # unknown: the furthest bin's
    for edge in edges:  # continuous where a step jumps
        assert abs(band(table, 0.95, edge - 1e-6) - band(table, 0.95, edge + 1e-6)) < 1e-4
    stepped = {**table, "nearest": {"edges": edges}}
    assert [band(stepped, 0.95, center) for center in centers] == pytest.approx(values)
    assert band(stepped, 0.95, middle) == pytest.approx(values[2] if middle > edges[1] else values[1])
    damaged = {**table, "nearest": {"edges": edges, "centers": [centers[0]] * len(centers)}}  # not increasing: steps
    assert band(damaged, 0.95, middle) == band(stepped, 0.95, middle)


def test_interpolated_bands_reach_the_target_in_every_bin_and_serve_a_bins_far_end():
    """The 1M bench's miss in miniature: queries need a wider band the further they are from the
    clusters, and the real ones lie at the far end of their bins. A band per bin serves the
    bin's average query and misses them; interpolated, every bin still reaches its target on
    its own queries and the far end gets about it too."""
    rng = np.random.default_rng(3)
    similarity = np.sort(rng.uniform(0.2, 1.0, 4000))
    gaps = rng.exponential(0.1 * (1.2 - similarity)[:, None], (4000, 10))  # each query's neighbours: how far below
    bins = np.array_split(np.arange(4000), 4)
    centers = [float(np.median(similarity[rows])) for rows in bins]
    target = 0.95

    def recall_of(rows: np.ndarray):
        return lambda band: float(np.mean(gaps[rows] <= np.reshape(band, (-1, 1))))

    steps = [float(np.quantile(gaps[rows], target)) for rows in bins]  # what a band per bin reaches it with
    raised = calibration._interpolated_bands(
        [recall_of(rows) for rows in bins], [similarity[rows] for rows in bins], centers, steps, target
    )
    assert all(value >= step for value, step in zip(raised, steps, strict=True))
    for rows in bins:
        assert target <= recall_of(rows)(np.interp(similarity[rows], centers, raised)) <= target + 0.02
    far_ends = [rows[: len(rows) // 4] for rows in bins]  # each bin's quarter furthest from the clusters
    stepped = np.mean([recall_of(rows)(np.full(len(rows), step)) for rows, step in zip(far_ends, steps, strict=True)])
    interpolated = np.mean([recall_of(rows)(np.interp(similarity[rows], centers, raised)) for rows in far_ends])
    assert stepped < target - 0.015 and interpolated >= target - 0.01, (stepped, interpolated)
