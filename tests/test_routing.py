import numpy as np

from cluster_retriever.routing import default_scan_budget, route
from cluster_retriever.types import SearchParams

CENTROIDS = np.eye(4, dtype=np.float32)
SIZES = np.array([5, 5, 5, 5])


def unit(*values: float) -> np.ndarray:
    vector = np.array(values, dtype=np.float32)
    return vector / np.linalg.norm(vector)


def test_flat_probes_everything():
    assert route(CENTROIDS @ unit(1, 0, 0, 0), SIZES, SearchParams(mode="flat")) is None


def test_strict_probes_nearest_only():
    assert list(route(CENTROIDS @ unit(0.2, 1, 0, 0), SIZES, SearchParams(mode="strict"))) == [1]


def test_fixed_n_probe_nearest_first():
    assert list(route(CENTROIDS @ unit(0.5, 1, 0.2, 0), SIZES, SearchParams(mode="routed", n_probe=2))) == [1, 0]


def test_empty_clusters_never_probed():
    sizes = np.array([5, 0, 5, 5])
    assert 1 not in route(CENTROIDS @ unit(0.1, 1, 0, 0), sizes, SearchParams(mode="routed", n_probe=3))
    assert list(route(CENTROIDS @ unit(0.1, 1, 0, 0), sizes, SearchParams(mode="strict"))) == [0]


def test_adaptive_probes_more_near_a_boundary():
    rng = np.random.default_rng(0)
    centroids = rng.normal(size=(100, 8)).astype(np.float32)
    centroids /= np.linalg.norm(centroids, axis=1, keepdims=True)
    sizes = np.full(100, 10)
    base = int(np.ceil(default_scan_budget(sizes) / 10))  # clusters of equal size
    inside = centroids[3]
    similarity = np.sort(centroids @ inside)[::-1]
    gap = similarity[base - 1] - similarity[base]  # to the first cluster past the budget
    boundary = unit(*(centroids[: base + 4].sum(axis=0)))  # equidistant from many centroids
    assert len(route(centroids @ inside, sizes, SearchParams(boundary_margin=gap / 2))) == base
    assert len(route(centroids @ inside, sizes, SearchParams(boundary_margin=gap * 1.01))) > base
    assert len(route(centroids @ boundary, sizes, SearchParams(boundary_margin=0.05))) > base
    assert len(route(centroids @ boundary, sizes, SearchParams(boundary_margin=0.05))) <= base + base // 2


def test_default_scans_documents_not_clusters():
    """Nearest clusters that are large are probed fewer at a time: the budget is in documents."""
    rng = np.random.default_rng(2)
    centroids = rng.normal(size=(200, 16)).astype(np.float32)
    centroids /= np.linalg.norm(centroids, axis=1, keepdims=True)
    query = centroids[0]
    even = np.full(200, 10)
    uneven = np.where(centroids @ query > 0, 40, 1)  # the clusters near the query are 40x larger
    budget = default_scan_budget(uneven)
    probed = route(centroids @ query, uneven, SearchParams(boundary_margin=0.0))
    assert uneven[probed[:-1]].sum() < budget <= uneven[probed].sum()
    assert len(probed) < len(route(centroids @ query, even, SearchParams(boundary_margin=0.0)))


def test_default_budget_falls_as_the_corpus_grows():
    fractions = [default_scan_budget(np.full(k, n // k)) / n for n, k in ((1_460, 199), (100_000, 1_644), (1_000_000, 5_200))]
    assert fractions[0] <= 0.2 and fractions[0] > fractions[1] > fractions[2]


def test_small_corpus_default_probes_every_cluster():
    sizes = np.array([3, 3, 3, 3])
    assert sorted(route(CENTROIDS @ unit(1, 0.1, 0, 0), sizes)) == [0, 1, 2, 3]


def test_nearest_clusters_smaller_than_expected_extend_the_sort():
    """The head sorted first (a few times the expected count) is not enough when the nearest
    clusters are tiny; the order is then completed, never cut short."""
    rng = np.random.default_rng(3)
    centroids = rng.normal(size=(1000, 8)).astype(np.float32)
    centroids /= np.linalg.norm(centroids, axis=1, keepdims=True)
    query = centroids[0]
    sizes = np.where(centroids @ query > 0.2, 1, 100)
    probed = route(centroids @ query, sizes, SearchParams(boundary_margin=0.0))
    assert sizes[probed].sum() >= default_scan_budget(sizes)
    assert list(probed) == list(np.argsort(-(centroids @ query), kind="stable")[: len(probed)])


def test_partial_sort_gives_the_full_order_head():
    rng = np.random.default_rng(1)
    centroids = rng.normal(size=(300, 16)).astype(np.float32)
    sizes = rng.integers(0, 3, size=300)  # about a third empty
    query = unit(*rng.normal(size=16))
    similarity = centroids @ query
    full = [c for c in np.argsort(-similarity) if sizes[c] > 0]
    assert list(route(centroids @ query, sizes, SearchParams(n_probe=12))) == full[:12]
    assert list(route(centroids @ query, sizes, SearchParams(n_probe=1000))) == full  # capped at the non-empty clusters
    adaptive = list(route(centroids @ query, sizes))
    assert adaptive == full[: len(adaptive)]


def test_a_band_probes_every_centroid_within_it_nearest_first():
    similarity = np.array([0.50, 0.80, 0.78, 0.20, 0.71, 0.75], dtype=np.float32)
    sizes = np.full(6, 10)
    assert list(route(similarity, sizes, band=0.06)) == [1, 2, 5]
    assert list(route(similarity, sizes, band=0.0)) == [1]
    assert list(route(similarity, sizes, band=0.0, min_docs=25)) == [1, 2, 5]  # filled to hold min_docs
    assert list(route(similarity, np.array([10, 10, 0, 10, 10, 10]), band=0.06)) == [1, 5]  # empty: never
    # Beside a budget, the longer nearest-first prefix: a wide band reaches past it, a narrow one adds nothing.
    budget = route(similarity, sizes, budget_factor=0.01)
    assert list(budget) == [1] and list(route(similarity, sizes, budget_factor=0.01, band=0.06)) == [1, 2, 5]
    assert list(route(similarity, sizes, budget_factor=0.0)) == [1]  # a zero budget: the nearest cluster
    wide = route(similarity, sizes, budget_factor=100.0)
    assert list(route(similarity, sizes, budget_factor=100.0, band=0.0)) == list(wide)
    assert list(route(similarity, sizes, SearchParams(n_probe=2), band=0.5)) == [1, 2]  # n_probe asked: the band does not apply
