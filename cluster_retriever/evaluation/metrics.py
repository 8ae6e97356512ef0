"""IR metrics through ranx (nDCG, recall, MRR), never hand-written formulas."""

from __future__ import annotations

from typing import Mapping, Sequence

from ranx import Qrels, Run, evaluate

DEFAULT_METRICS = ("ndcg@10", "recall@10", "recall@100", "mrr@10")
Ranking = Mapping[str, Mapping[str, float]]


def ir_metrics(
    qrels: Mapping[str, Mapping[str, int]], run: Ranking, metrics: Sequence[str] = DEFAULT_METRICS
) -> dict[str, float]:
    """Mean metrics over the judged queries; a judged query missing from ``run`` scores 0."""
    judged = {qid: dict(docs) for qid, docs in qrels.items() if docs}
    ranking = {qid: dict(run.get(qid, {})) for qid in judged}
    # ranx needs at least one document per query; a placeholder id is never relevant.
    ranking = {qid: docs or {"__no_result__": 0.0} for qid, docs in ranking.items()}
    scores = evaluate(Qrels(judged), Run(ranking), list(metrics), make_comparable=True)
    if isinstance(scores, float):
        scores = {metrics[0]: scores}
    return {name: float(value) for name, value in scores.items()}
