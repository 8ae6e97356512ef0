"""The harness's decision helpers: Holm's correction, paired tests, bootstrap intervals, the
Pareto front, BM25 and reciprocal rank fusion."""

import numpy as np
import pytest

from cluster_retriever.evaluation.analysis import pareto_front
from cluster_retriever.evaluation.lexical import BM25Ranker, reciprocal_rank_fusion
from cluster_retriever.evaluation.statistics import Comparison, confidence_interval, holm, paired_test, per_query


def test_holm_adjusts_step_down_and_stays_monotone():
    family = [Comparison("a", "b", "m", 0, 0, p) for p in (0.01, 0.04, 0.03, 0.5)]
    adjusted = [c.p_holm for c in holm(family)]
    # sorted p: 0.01*4=0.04, 0.03*3=0.09, 0.04*2=0.08 -> 0.09 (monotone), 0.5*1=0.5
    assert adjusted == pytest.approx([0.04, 0.09, 0.09, 0.5])
    assert [c.significant for c in holm(family)] == [True, False, False, False]


def test_paired_test_sees_a_consistent_gap_and_not_noise():
    rng = np.random.default_rng(0)
    base = {str(i): float(v) for i, v in enumerate(rng.random(60))}
    better = {q: v + 0.05 for q, v in base.items()}
    noisy = {q: v + rng.normal(0, 0.2) for q, v in base.items()}
    assert paired_test("x", "y", "m", better, base).p_value < 1e-10
    assert paired_test("x", "y", "m", base, base).p_value == 1.0
    assert paired_test("x", "y", "m", noisy, base).p_value > 0.05


def test_bootstrap_interval_is_seeded_and_holds_the_mean():
    scores = list(np.random.default_rng(1).random(100))
    low, high = confidence_interval(scores, seed=3)
    assert low < np.mean(scores) < high and (low, high) == confidence_interval(scores, seed=3)
    assert confidence_interval([0.5, 0.5]) == (0.5, 0.5)


def test_per_query_scores_match_the_mean():
    qrels = {"q1": {"a": 1}, "q2": {"b": 1}}
    scores = per_query(qrels, {"q1": {"a": 1.0}, "q2": {"x": 1.0, "b": 0.5}}, "mrr@10")
    assert scores == {"q1": 1.0, "q2": 0.5}


def test_pareto_front_keeps_only_undominated_models():
    points = {"fast": (1000.0, 0.6), "slow-good": (10.0, 0.9), "dominated": (5.0, 0.5), "middle": (100.0, 0.8)}
    assert pareto_front(points) == ["slow-good", "middle", "fast"]


def test_bm25_and_rank_fusion():
    ranker = BM25Ranker(["a", "b", "c"], ["pastry chef bakes croissants", "spark etl pipelines", "tax ledger audit"])
    ranked = ranker.rank({"q": "croissants from the pastry chef"})
    assert list(ranked["q"]) == ["a"]
    fused = reciprocal_rank_fusion({"a": 3.0, "b": 2.0}, {"b": 5.0, "c": 1.0})
    assert list(fused) == ["b", "a", "c"] and fused["b"] == pytest.approx(1 / 62 + 1 / 61)
