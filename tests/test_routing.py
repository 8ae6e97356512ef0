import numpy as np

from cluster_retriever.routing import default_n_probe, route

CENTROIDS = np.eye(4, dtype=np.float32)
SIZES = np.array([5, 5, 5, 5])


def unit(*values: float) -> np.ndarray:
    vector = np.array(values, dtype=np.float32)
    return vector / np.linalg.norm(vector)


def test_flat_probes_everything():
    assert route(unit(1, 0, 0, 0), CENTROIDS, SIZES, "flat") is None


def test_strict_probes_nearest_only():
    assert list(route(unit(0.2, 1, 0, 0), CENTROIDS, SIZES, "strict")) == [1]


def test_fixed_n_probe_nearest_first():
    assert list(route(unit(0.5, 1, 0.2, 0), CENTROIDS, SIZES, "routed", n_probe=2)) == [1, 0]


def test_empty_clusters_never_probed():
    sizes = np.array([5, 0, 5, 5])
    assert 1 not in route(unit(0.1, 1, 0, 0), CENTROIDS, sizes, "routed", n_probe=3)
    assert list(route(unit(0.1, 1, 0, 0), CENTROIDS, sizes, "strict")) == [0]


def test_adaptive_probes_more_near_a_boundary():
    rng = np.random.default_rng(0)
    centroids = rng.normal(size=(100, 8)).astype(np.float32)
    centroids /= np.linalg.norm(centroids, axis=1, keepdims=True)
    sizes = np.full(100, 10)
    base = default_n_probe(100)
    inside = centroids[3]  # sits on a centroid: similarities fall off fast
    boundary = unit(*(centroids[:base + 4].sum(axis=0)))  # equidistant from many centroids
    assert len(route(inside, centroids, sizes, boundary_margin=0.01)) == base
    assert len(route(boundary, centroids, sizes, boundary_margin=0.05)) > base
    assert len(route(boundary, centroids, sizes, boundary_margin=0.05)) <= base + base // 2


def test_default_probe_fraction_falls_with_k():
    assert default_n_probe(100) / 100 > default_n_probe(1000) / 1000 > default_n_probe(10000) / 10000


def test_partial_sort_gives_the_full_order_head():
    rng = np.random.default_rng(1)
    centroids = rng.normal(size=(300, 16)).astype(np.float32)
    sizes = rng.integers(0, 3, size=300)  # about a third empty
    query = unit(*rng.normal(size=16))
    similarity = centroids @ query
    full = [c for c in np.argsort(-similarity) if sizes[c] > 0]
    assert list(route(query, centroids, sizes, n_probe=12)) == full[:12]
    assert list(route(query, centroids, sizes, n_probe=1000)) == full  # capped at the non-empty clusters
    adaptive = list(route(query, centroids, sizes))
    assert adaptive == full[: len(adaptive)]
