"""Metrics: IR metrics through ranx, RAGAS metrics through ``ragas.evaluate``, cluster quality."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from ranx import Qrels, Run, evaluate
from sklearn.metrics import silhouette_score

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


def ragas_id_metrics(
    queries: Mapping[str, str], qrels: Mapping[str, Mapping[str, int]], run: Ranking, top_k: int
) -> dict[str, float]:
    """RAGAS's ID-based context precision and recall on the top ``top_k`` (no LLM needed)."""
    from ragas import EvaluationDataset, MultiTurnSample, SingleTurnSample
    from ragas import evaluate as ragas_evaluate
    from ragas.metrics import IDBasedContextPrecision, IDBasedContextRecall

    samples: list[SingleTurnSample | MultiTurnSample] = [
        SingleTurnSample(
            user_input=queries[qid],
            retrieved_context_ids=[d for d, _ in sorted(run.get(qid, {}).items(), key=lambda kv: -kv[1])[:top_k]] or ["-"],
            reference_context_ids=[d for d, rel in qrels[qid].items() if rel > 0],
        )
        for qid in queries
        if qrels.get(qid)
    ]
    result: Any = ragas_evaluate(
        EvaluationDataset(list(samples)), metrics=[IDBasedContextPrecision(), IDBasedContextRecall()], show_progress=False
    )
    frame = result.to_pandas()
    return {
        f"ragas_id_context_precision@{top_k}": float(frame["id_based_context_precision"].mean()),
        f"ragas_id_context_recall@{top_k}": float(frame["id_based_context_recall"].mean()),
    }


LLM_METRICS = ("faithfulness", "answer_relevancy", "llm_context_precision_with_reference", "context_recall")


def ragas_llm_metrics(
    samples: list[dict[str, Any]], llm: Any, embed_model: Any, timeout: float = 120.0
) -> tuple[dict[str, float], dict[str, int]]:
    """Faithfulness, response relevancy and LLM context precision/recall, judged by ``llm``
    (a LlamaIndex LLM). Returns each metric's mean over the samples it could score and, per
    metric, how many it could not (malformed output, timeout, nothing to judge): those are
    counted, never averaged in. Workers, timeouts and retries suit a small local model."""
    from ragas import EvaluationDataset, RunConfig, SingleTurnSample
    from ragas import evaluate as ragas_evaluate
    from ragas.embeddings import LlamaIndexEmbeddingsWrapper
    from ragas.llms import LlamaIndexLLMWrapper
    from ragas.metrics import Faithfulness, LLMContextPrecisionWithReference, LLMContextRecall, ResponseRelevancy

    if not samples:
        return {}, {}
    dataset = EvaluationDataset([SingleTurnSample(**sample) for sample in samples])
    # RAGAS's LlamaIndex wrapper returns one generation whatever n it asks for, and passes n on:
    # providers without n (Ollama) then refuse every call. One generated question per answer.
    relevancy = ResponseRelevancy(strictness=1)
    result: Any = ragas_evaluate(
        dataset,
        metrics=[Faithfulness(), relevancy, LLMContextPrecisionWithReference(), LLMContextRecall()],
        llm=LlamaIndexLLMWrapper(llm),
        embeddings=LlamaIndexEmbeddingsWrapper(embed_model),
        run_config=RunConfig(timeout=int(timeout), max_retries=2, max_wait=10, max_workers=2),
        raise_exceptions=False,
        show_progress=True,
    )
    frame = result.to_pandas()
    means: dict[str, float] = {}
    failed: dict[str, int] = {}
    for name in LLM_METRICS:
        scores = [float(v) for v in frame[name]] if name in frame else []
        scored = [v for v in scores if math.isfinite(v)]
        failed[name] = len(samples) - len(scored)
        if scored:
            means[name] = float(np.mean(scored))
    return means, failed


def cluster_quality(
    vectors: np.ndarray, clusters: np.ndarray, labels: Sequence[str] | None = None, seed: int = 0
) -> dict[str, float]:
    """Silhouette (cosine, on a sample of at most 3,000 points) and, given labels, purity:
    the share of documents whose cluster's majority label is their own."""
    quality: dict[str, float] = {}
    if 1 < len(set(clusters.tolist())) < len(clusters):
        quality["silhouette"] = float(
            silhouette_score(vectors, clusters, metric="cosine", sample_size=min(3000, len(vectors)), random_state=seed)
        )
    if labels is not None:
        majority = 0
        for cluster in set(clusters.tolist()):
            members = [labels[int(i)] for i in np.flatnonzero(clusters == cluster)]
            majority += Counter(members).most_common(1)[0][1]
        quality["purity"] = majority / len(clusters)
    return quality
