import asyncio
import random

import pytest

from cluster_retriever.rerank.sorting import ALGORITHMS, METHODS


def random_truth(n: int, seed: int) -> list[float]:
    rng = random.Random(seed)
    return [rng.random() for _ in range(n)]


def comparator(truth: list[float], noise: float = 0.0, seed: int = 0):
    """i beats j when truth[i] > truth[j], flipped with probability ``noise``; equal -> tie."""
    rng = random.Random(seed)
    calls = []

    async def compare(i: int, j: int) -> float:
        calls.append((i, j))
        if truth[i] == truth[j]:
            return 0.5
        right = 1.0 if truth[i] > truth[j] else 0.0
        return 1.0 - right if rng.random() < noise else right

    return compare, calls


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("n", [0, 1, 2, 3, 7, 30])
def test_every_method_returns_a_permutation(method, n):
    for seed in range(3):
        truth = random_truth(n, seed + n)
        compare, _ = comparator(truth, noise=0.3, seed=seed)
        order = asyncio.run(ALGORITHMS[method](n, compare, 5))
        assert sorted(order) == list(range(n))


@pytest.mark.parametrize("method", ["allpair", "heapsort", "sliding"])
def test_exact_methods_with_a_perfect_judge_find_the_true_top(method):
    truth = random_truth(40, 1)
    compare, _ = comparator(truth)
    order = asyncio.run(ALGORITHMS[method](40, compare, 10))
    assert order[:10] == sorted(range(40), key=lambda i: -truth[i])[:10]


def test_tournament_with_a_perfect_judge_almost_always_finds_the_true_top():
    exact = 0
    for seed in range(20):
        truth = random_truth(50, seed)
        compare, _ = comparator(truth)
        exact += asyncio.run(ALGORITHMS["tournament"](50, compare, 10))[:10] == sorted(range(50), key=lambda i: -truth[i])[:10]
    assert exact >= 17


@pytest.mark.parametrize("method", METHODS)
def test_ties_keep_the_first_stage_order(method):
    compare, _ = comparator([1.0] * 12)
    assert asyncio.run(ALGORITHMS[method](12, compare, 5)) == list(range(12))


def test_costs_scale_as_designed():
    truth = random_truth(50, 2)
    counts = {}
    for method in METHODS:
        compare, calls = comparator(truth)
        asyncio.run(ALGORITHMS[method](50, compare, 10))
        counts[method] = len(calls)
    assert counts["allpair"] == 50 * 49 // 2
    assert counts["heapsort"] < counts["tournament"] < counts["allpair"] / 4


def test_tournament_survives_a_noisy_judge_where_heapsort_does_not():
    hits = {"tournament": 0, "heapsort": 0, "allpair": 0}
    for seed in range(20):
        truth = random_truth(50, seed)
        best = set(sorted(range(50), key=lambda i: -truth[i])[:10])
        for method in hits:
            compare, _ = comparator(truth, noise=0.2, seed=seed)
            hits[method] += len(best & set(asyncio.run(ALGORITHMS[method](50, compare, 10))[:10]))
    assert hits["tournament"] >= 0.95 * hits["allpair"]
    assert hits["tournament"] > 1.5 * hits["heapsort"]
