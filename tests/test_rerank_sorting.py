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


class OneOrderJudge:
    """A comparator with ``one`` (one LLM call) beside both orders (two calls, one if ``one``
    asked that pair before), as the reranker's comparisons are."""

    def __init__(self, truth: list[float], noise: float = 0.0, seed: int = 0) -> None:
        self.truth, self.noise, self.rng = truth, noise, random.Random(seed)
        self.calls = 0
        self.asked: set[tuple[int, int]] = set()

    def _answer(self, i: int, j: int) -> float:
        if self.truth[i] == self.truth[j]:
            return 0.5
        right = 1.0 if self.truth[i] > self.truth[j] else 0.0
        return 1.0 - right if self.rng.random() < self.noise else right

    async def one(self, i: int, j: int) -> float:
        self.calls += 1
        self.asked.add((min(i, j), max(i, j)))
        return self._answer(i, j)

    async def __call__(self, i: int, j: int) -> float:
        self.calls += 1 if (min(i, j), max(i, j)) in self.asked else 2
        return (self._answer(i, j) + self._answer(i, j)) / 2


@pytest.mark.parametrize(("n", "top_n", "budget"), [(30, 5, 80), (50, 10, 150), (100, 10, 300), (20, 5, 10)])
def test_budgeted_spends_at_most_its_budget(n, top_n, budget):
    judge = OneOrderJudge(random_truth(n, n), noise=0.2)
    order = asyncio.run(ALGORITHMS["budgeted"](n, judge, top_n, budget=budget))
    assert sorted(order) == list(range(n)) and judge.calls <= budget


def first_stage_truth(n: int, seed: int) -> list[float]:
    """Relevance that a first stage ranked roughly right: falling with the rank, plus noise."""
    rng = random.Random(seed)
    return [1.0 - i / n + rng.gauss(0, 0.3) for i in range(n)]


def test_budgeted_default_budget_and_quality_under_noise():
    from cluster_retriever.rerank.sorting import default_budget

    assert [default_budget(30, 5), default_budget(50, 10), default_budget(100, 10)] == [80, 140, 240]
    found = {"budgeted": 0, "allpair": 0, "first stage": 0}
    for seed in range(20):
        truth = first_stage_truth(50, seed)
        best = set(sorted(range(50), key=lambda i: -truth[i])[:10])
        judge = OneOrderJudge(truth, noise=0.1, seed=seed)
        found["budgeted"] += len(best & set(asyncio.run(ALGORITHMS["budgeted"](50, judge, 10))[:10]))
        assert judge.calls <= 140
        compare, _ = comparator(truth, noise=0.1, seed=seed)
        found["allpair"] += len(best & set(asyncio.run(ALGORITHMS["allpair"](50, compare, 10))[:10]))
        found["first stage"] += len(best & set(range(10)))
    # measured: first stage 105, budgeted 113, allpair 180 of 200 (docs/reranker.md: the budget buys
    # less than allpair's quality; on CISI's judgments 0.81-0.93x its nDCG@10)
    assert found["first stage"] < found["budgeted"] < found["allpair"]
