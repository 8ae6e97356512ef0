"""Is a difference real? Per-query scores, paired tests with Holm's correction, bootstrap CIs.

The tests and the bootstrap are SciPy's (``scipy.stats.ttest_rel``, ``scipy.stats.bootstrap``);
Holm's step-down correction is applied to the family of comparisons made on one dataset.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from ranx import Qrels, Run, evaluate
from scipy import stats

ALPHA = 0.05


def per_query(qrels: Mapping[str, Mapping[str, int]], run: Mapping[str, Mapping[str, float]], metric: str) -> dict[str, float]:
    """``metric`` for every judged query (0 for a query missing from ``run``), via ranx."""
    judged = {qid: dict(docs) for qid, docs in qrels.items() if docs}
    ranking = {qid: dict(run.get(qid, {})) or {"__no_result__": 0.0} for qid in judged}
    scores = evaluate(Qrels(judged), Run(ranking), metric, return_mean=False, make_comparable=True)
    return {qid: float(score) for qid, score in zip(sorted(judged), np.asarray(scores), strict=True)}


def confidence_interval(scores: Sequence[float], seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """A bootstrap (BCa) confidence interval of the mean over queries, seeded."""
    values = np.asarray(scores, dtype=float)
    if len(values) < 2 or np.all(values == values[0]):
        return float(values.mean()) if len(values) else 0.0, float(values.mean()) if len(values) else 0.0
    result = stats.bootstrap((values,), np.mean, confidence_level=level, random_state=seed, n_resamples=2000)
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


@dataclass(frozen=True)
class Comparison:
    """A paired two-sided t-test of ``a`` against ``b`` on one metric over the same queries."""

    a: str
    b: str
    metric: str
    mean_a: float
    mean_b: float
    p_value: float
    p_holm: float = 1.0

    @property
    def significant(self) -> bool:
        return self.p_holm < ALPHA

    @property
    def better(self) -> str:
        return self.a if self.mean_a >= self.mean_b else self.b


def paired_test(a: str, b: str, metric: str, scores_a: Mapping[str, float], scores_b: Mapping[str, float]) -> Comparison:
    queries = sorted(scores_a)
    x = np.asarray([scores_a[q] for q in queries])
    y = np.asarray([scores_b[q] for q in queries])
    p_value = 1.0 if np.allclose(x, y) else float(stats.ttest_rel(x, y).pvalue)
    return Comparison(a, b, metric, float(x.mean()), float(y.mean()), p_value if np.isfinite(p_value) else 1.0)


def holm(comparisons: Sequence[Comparison]) -> list[Comparison]:
    """Holm's step-down adjustment over the family: p_(i) * (m - i), made monotone, capped at 1."""
    order = sorted(range(len(comparisons)), key=lambda i: comparisons[i].p_value)
    adjusted = [1.0] * len(comparisons)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, comparisons[i].p_value * (len(comparisons) - rank)))
        adjusted[i] = running
    return [Comparison(c.a, c.b, c.metric, c.mean_a, c.mean_b, c.p_value, p) for c, p in zip(comparisons, adjusted, strict=True)]
