"""From scores to a decision: the family of paired comparisons, the verdict sentence, the
Pareto front of quality against cost, and where routing loses against exact search."""

from __future__ import annotations

import itertools
from typing import Any

from cluster_retriever.datasets import BeirDataset
from cluster_retriever.evaluation.runner import ModelRun
from cluster_retriever.evaluation.statistics import Comparison, holm, paired_test

Row = tuple[str, str]  # (model, mode)


def _scores(results: list[ModelRun]) -> dict[Row, dict[str, dict[str, float]]]:
    return {(r.model, run["mode"]): run["per_query"] for r in results for run in r.runs if "per_query" in run}


def comparisons(results: list[ModelRun], metrics: tuple[str, ...] = ("ndcg@10", "recall@100")) -> list[Comparison]:
    """Every pair of models within a mode (BM25 against each model's exact search), every
    mode against flat within a model; Holm-adjusted over the whole family."""
    scores = _scores(results)
    pairs: list[tuple[Row, Row]] = []
    modes = sorted({mode for _, mode in scores})
    for mode in modes:
        rows = sorted(row for row in scores if row[1] == mode)
        pairs += list(itertools.combinations(rows, 2))
    lexical = [row for row in scores if row[1] == "lexical"]
    pairs += [(lex, row) for lex in lexical for row in scores if row[1] == "flat"]
    for model in sorted({model for model, _ in scores}):
        if (model, "flat") in scores:
            pairs += [((model, mode), (model, "flat")) for m, mode in scores if m == model and mode not in ("flat", "lexical")]
    family = [
        paired_test(f"{a[0]} {a[1]}", f"{b[0]} {b[1]}", metric, scores[a][metric], scores[b][metric])
        for a, b in pairs
        for metric in metrics
    ]
    return holm(family)


def verdict(dataset: str, results: list[ModelRun], family: list[Comparison]) -> str:
    """One sentence: the best row by nDCG@10 and which of its leads are significant."""
    rows = [(r.model, run["mode"], run["metrics"]["ndcg@10"]) for r in results for run in r.runs]
    if not rows:
        return f"On {dataset}, no model produced results."
    model, mode, best = max(rows, key=lambda row: row[2])
    name = f"{model} {mode}"
    against = [c for c in family if c.metric == "ndcg@10" and name in (c.a, c.b)]
    beaten = sorted(c.b if c.a == name else c.a for c in against if c.significant and c.better == name)
    tied = sorted(c.b if c.a == name else c.a for c in against if not c.significant)
    flat_pairs = [c for c in family if c.metric == "ndcg@10" and c.b.endswith(" flat") and c.a.split(" ")[0] == c.b.split(" ")[0]]
    mode_changes = sorted(f"{c.a} ({'better' if c.mean_a > c.mean_b else 'worse'})" for c in flat_pairs if c.significant)
    sentence = f"On {dataset}, {name} has the best nDCG@10 ({best:.3f})"
    sentence += f"; it is significantly better (Holm-adjusted paired t-test, p < 0.05) than {', '.join(beaten)}" if beaten else ""
    sentence += f"; its differences from {', '.join(tied)} are not significant" if tied else ""
    sentence += (
        f"; against exact search, {', '.join(mode_changes)} differ significantly"
        if mode_changes
        else "; no retrieval mode differs significantly from exact search within a model"
    )
    return sentence + "."


def pareto_front(points: dict[str, tuple[float, float]]) -> list[str]:
    """Names on the front of (throughput, quality): nothing else is both faster and better."""
    front = []
    for name, (speed, quality) in points.items():
        dominated = any(
            s >= speed and q >= quality and (s, q) != (speed, quality) for other, (s, q) in points.items() if other != name
        )
        if not dominated:
            front.append(name)
    return sorted(front, key=lambda name: points[name][0])


def drill_down(result: ModelRun, data: BeirDataset, queries: dict[str, str], count: int = 5) -> list[dict[str, Any]]:
    """The queries where routed loses most nDCG@10 against flat: how many clusters it probed
    and the rank flat gave each relevant document that routed did not return."""
    runs = {run["mode"]: run for run in result.runs}
    if "routed" not in runs or "flat" not in runs:
        return []
    routed, flat = runs["routed"]["per_query"]["ndcg@10"], runs["flat"]["per_query"]["ndcg@10"]
    drops = sorted(((flat[q] - routed[q], q) for q in routed if flat[q] > routed[q]), reverse=True)[:count]
    details = []
    for drop, qid in drops:
        flat_order = sorted(result.rankings["flat"].get(qid, {}), key=lambda d: -result.rankings["flat"][qid][d])
        returned = set(result.rankings["routed"].get(qid, {}))
        missed = {
            doc: flat_order.index(doc) + 1
            for doc, rel in data.qrels[qid].items()
            if rel > 0 and doc not in returned and doc in flat_order
        }
        details.append(
            {
                "query": queries[qid],
                "ndcg_drop": drop,
                "clusters_probed": (result.probes.get(qid) or [0])[0],
                "missed_relevant_flat_rank": missed,
            }
        )
    return details
