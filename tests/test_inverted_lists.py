import time

import numpy as np
import pytest

from cluster_retriever.scan import kernels
from cluster_retriever.scan.kernels import NumpyKernel, RefinedKernel
from cluster_retriever.scan.lists import InvertedLists


def make(n: int = 200, k: int = 8, dim: int = 16, seed: int = 0):
    rng = np.random.default_rng(seed)
    vectors = rng.normal(size=(n, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    labels = rng.integers(0, k, size=n)
    centroids = np.stack([vectors[labels == c].mean(0) for c in range(k)])
    ids = [f"d{i}" for i in range(n)]
    return InvertedLists(centroids, ids, vectors, labels), vectors, labels, ids


def test_flat_scan_equals_exact_search():
    lists, vectors, _, ids = make()
    query = vectors[5]
    result = lists.scan(query, None, 10)
    exact = np.argsort(-(vectors @ query))[:10]
    assert result.ids == [ids[i] for i in exact]
    assert np.allclose(result.scores, (vectors @ query)[exact])
    assert result.n_scanned == len(ids)


def test_scan_of_clusters_equals_exact_search_restricted_to_them():
    lists, vectors, labels, ids = make()
    query = vectors[7]
    clusters = [2, 5]
    result = lists.scan(query, clusters, 15)
    allowed = np.flatnonzero(np.isin(labels, clusters))
    exact = allowed[np.argsort(-(vectors[allowed] @ query))[:15]]
    assert result.ids == [ids[i] for i in exact]
    assert result.n_scanned == len(allowed)


def test_top_k_larger_than_candidates():
    lists, vectors, labels, _ = make()
    result = lists.scan(vectors[0], [0], 10_000)
    assert len(result.ids) == int((labels == 0).sum())


def test_added_and_removed_return_new_lists():
    lists, vectors, labels, ids = make()
    grown = lists.added(["new"], vectors[:1] * -1, np.array([3]))
    assert "new" in grown and "new" not in lists
    assert grown.cluster_of("new") == 3 and len(grown) == len(lists) + 1
    shrunk = grown.removed(["new", "d0"])
    assert "d0" not in shrunk and len(shrunk) == len(lists) - 1
    assert shrunk.sizes.sum() == len(shrunk)


def test_the_faiss_kernel_returns_what_the_numpy_scan_returns():
    lists, vectors, labels, ids = make(n=600, k=12, dim=32, seed=3)
    for row in range(0, 600, 37):
        query = vectors[row]
        for clusters in ([int(labels[row])], [0, 3, 7], list(range(12))):
            ours, theirs = lists.scan(query, clusters, 10, kernel="numpy"), lists.scan(query, clusters, 10, kernel="faiss")
            assert theirs.ids == ours.ids and np.allclose(theirs.scores, ours.scores, atol=1e-5)
            assert theirs.n_scanned == ours.n_scanned == int(np.isin(labels, clusters).sum())
    small = lists.scan(vectors[0], [int(labels[0])], 10_000, kernel="faiss")  # k larger than the clusters
    assert len(small.ids) == small.n_scanned == int((labels == labels[0]).sum())
    mask = np.zeros(600, dtype=bool)
    mask[::2] = True  # rows in the lists' order; a filter takes the masked numpy scan
    filtered = lists.scan(vectors[1], [0, 1], 5, mask, kernel="faiss")
    assert filtered.ids == lists.scan(vectors[1], [0, 1], 5, mask, kernel="numpy").ids and set(filtered.ids) <= set(
        lists.ids[mask]
    )


def test_compressed_kernels_refine_exactly_and_find_what_the_float_scan_finds():
    lists, vectors, labels, ids = make(n=2000, k=16, dim=32, seed=5)
    for name, floor in (("sq8", 0.98), ("pq4", 0.8)):
        found = []
        for row in range(0, 2000, 41):
            query = vectors[row]
            clusters = np.unique(labels[np.argsort(-(vectors @ query))[:40]])  # the clusters of its neighbours
            ours, theirs = lists.scan(query, clusters, 10, kernel="numpy"), lists.scan(query, clusters, 10, kernel=name)
            assert theirs.n_scanned == ours.n_scanned == int(np.isin(labels, clusters).sum())
            by_id = {doc_id: i for i, doc_id in enumerate(ids)}
            exact = vectors[[by_id[doc_id] for doc_id in theirs.ids]] @ query
            assert np.allclose(theirs.scores, exact, atol=1e-5)  # refined: exact scores, best first
            assert list(theirs.scores) == sorted(theirs.scores, reverse=True)
            found.append(len(set(ours.ids) & set(theirs.ids)) / 10)
        assert np.mean(found) >= floor, (name, np.mean(found))


def half(lists: InvertedLists) -> InvertedLists:
    """The same lists stored as float16 (``lists_dtype="float16"``), rows already in cluster order."""
    return InvertedLists(lists.centroids, lists.ids, lists.vectors.astype(np.float16), lists.labels, fence=lists.fence)


def test_auto_scans_float32_lists_from_their_rows_and_builds_no_codes():
    """On float32 lists the rows are as fast as the 8-bit codes at routed scan sizes
    (``AUTO_CODEC``'s docstring): no codes are built behind the queries."""
    lists, vectors, labels, _ = make(n=2000, k=16, dim=32, seed=6)
    for row in range(0, 2000, 97):
        query, clusters = vectors[row], [int(labels[row]), 1, 2]
        assert lists.scan(query, clusters, 10).ids == lists.scan(query, clusters, 10, kernel="numpy").ids
    time.sleep(0.05)
    assert set(lists._kernels) == {"numpy"}


def test_auto_scans_float16_lists_from_their_rows_until_the_codes_are_built_then_the_codes():
    lists, vectors, labels, _ = make(n=2000, k=16, dim=32, seed=6)
    lists = half(lists)
    query, clusters = vectors[3], [int(labels[3]), 1, 2]
    first = lists.auto_kernel(exact=False)  # starts the build in the background, does not wait for it
    assert isinstance(first, NumpyKernel)
    deadline = time.monotonic() + 30
    while not isinstance(lists.auto_kernel(exact=False), RefinedKernel):
        assert time.monotonic() < deadline, "the codes were never built"
        time.sleep(0.01)
    assert isinstance(lists.auto_kernel(exact=True), NumpyKernel)  # an exact scan stays exact
    routed = lists.scan(query, clusters, 10)  # the default kernel is auto
    assert routed.ids == lists.scan(query, clusters, 10, kernel="sq8").ids
    flat = lists.scan(query, None, 10)
    assert flat.ids == lists.scan(query, None, 10, kernel="numpy").ids
    grown = lists.added(["new"], vectors[:1], np.array([0]))  # a new version starts again from the float rows
    assert grown.auto_kernel(exact=False) is not lists.auto_kernel(exact=False)


def test_auto_without_faiss_scans_the_float_rows(monkeypatch: pytest.MonkeyPatch):
    import cluster_retriever.scan.lists as lists_module

    monkeypatch.setattr(lists_module, "faiss_installed", lambda: False)
    lists, vectors, labels, _ = make(n=2000, k=16, dim=32, seed=6)
    lists = half(lists)
    for _ in range(3):
        assert isinstance(lists.auto_kernel(exact=False), NumpyKernel)
    time.sleep(0.05)
    assert "sq8" not in lists._kernels  # nothing was built
    assert kernels.AUTO_CODEC in kernels.KERNELS


def test_a_failed_code_build_is_logged_once_and_queries_keep_the_float_rows(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
):
    def broken(layout: object) -> None:
        raise MemoryError("no room for codes")

    monkeypatch.setitem(kernels.KERNELS, kernels.AUTO_CODEC, broken)
    lists, vectors, labels, _ = make(n=2000, k=16, dim=32, seed=6)
    lists = half(lists)
    query, clusters = vectors[3], [int(labels[3]), 1, 2]
    with caplog.at_level("WARNING", logger="cluster_retriever.scan.lists"):
        assert isinstance(lists.auto_kernel(exact=False), NumpyKernel)
        deadline = time.monotonic() + 30
        while not caplog.records:
            assert time.monotonic() < deadline, "the failed build was never reported"
            time.sleep(0.01)
        for _ in range(5):  # no retry storm: one build per version of the lists
            assert isinstance(lists.auto_kernel(exact=False), NumpyKernel)
        time.sleep(0.05)
    assert len(caplog.records) == 1 and "MemoryError: no room for codes" in caplog.text
    assert "float rows" in caplog.text
    assert lists.scan(query, clusters, 10).ids == lists.scan(query, clusters, 10, kernel="numpy").ids


def test_refinement_depth_is_chosen_on_the_lists_own_rows(monkeypatch: pytest.MonkeyPatch):
    lists, vectors, labels, ids = make(n=3000, k=16, dim=32, seed=8)
    monkeypatch.setitem(RefinedKernel.REFINE, "pq4", 1)  # start too shallow: 4-bit codes miss at depth 1
    kernel = RefinedKernel(lists.layout, "pq4")
    assert 1 < kernel.refine <= RefinedKernel.REFINE_MAX
    found = []
    for row in range(0, 3000, 97):  # queries it was not calibrated on find the float scan's top 10
        query = vectors[row]
        clusters = lists.nonempty(np.argsort(-(lists.centroids @ query))[:8])
        found.append(len(set(kernel.scan(query, clusters, 10).ids) & set(lists.scan(query, clusters, 10, kernel="numpy").ids)))
    assert np.mean(found) / 10 >= 0.97
    assert RefinedKernel(lists.layout, "pq4", refine=3).refine == 3  # an explicit depth is kept


@pytest.mark.parametrize("kernel", ["numpy", "sq8"])
def test_a_routed_scan_with_outliers_equals_exact_search_over_the_probes_and_every_outlier(kernel):
    """Outliers (rows below the fence) are scored from their own block in memory: the result is
    still the exact top-k of the probed clusters' rows and every other cluster's outliers, each
    row once, among what a mask lets through."""
    pytest.importorskip("faiss")
    lists, vectors, labels, ids = make(n=400, k=8, dim=16, seed=5)
    fence = float(np.quantile(lists.affinity, 0.2))  # a fifth of the rows are outliers
    lists = InvertedLists(lists.centroids, ids, vectors, labels, fence=fence)
    order = np.argsort(labels, kind="stable")  # the lists' rows are in cluster order
    affinity = lists.affinity[np.argsort(order)]  # back in the input's order
    outlier = affinity < fence
    assert 0 < outlier.sum() == len(lists.spill)
    allowed = np.ones(len(ids), dtype=bool)
    allowed[::3] = False
    mask = allowed[order]
    for row in range(0, 400, 23):
        query = vectors[row]
        for clusters, restricted in (([1, 4], None), ([0, 2, 6], mask), ([3], None)):
            result = lists.scan(query, clusters, 10, restricted, kernel=kernel, spill=True)
            candidates = np.isin(labels, clusters) | outlier
            if restricted is not None:
                candidates &= allowed
            rows = np.flatnonzero(candidates)
            exact = rows[np.argsort(-(vectors[rows] @ query), kind="stable")[:10]]
            assert result.ids == [ids[i] for i in exact]
            assert np.allclose(result.scores, vectors[exact] @ query, atol=1e-6)
            assert result.n_scanned == len(rows) and len(set(result.ids)) == len(result.ids)
            assert lists.ids[result.rows].tolist() == result.ids


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_rows_read_from_a_mapped_file_equal_the_rows_gathered(tmp_path, dtype):
    """The outliers' block is read from the lists file row by row (no mapping): the same values
    as a gather, as float32, for any rows in any order, and from arrays in memory too."""
    from cluster_retriever.scan.lists import read_rows

    array = np.random.default_rng(1).normal(size=(500, 24)).astype(dtype)
    np.save(tmp_path / "rows.npy", array)
    mapped = np.load(tmp_path / "rows.npy", mmap_mode="r")
    for rows in (np.array([0, 499, 17, 17, 250]), np.arange(0, 500, 7), np.zeros(0, dtype=np.int64)):
        read = read_rows(mapped, rows)
        assert read.dtype == np.float32 and read.shape == (len(rows), 24)
        assert np.array_equal(read, array[rows].astype(np.float32))
        assert np.array_equal(read_rows(array, rows), read)
