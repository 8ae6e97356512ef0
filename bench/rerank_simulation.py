"""Pairwise reranking algorithms under simulated judges, on human relevance judgments.

    python bench/rerank_simulation.py [--dataset ../shared/datasets/cisi] [--depth 50] [--top-n 10]

No LLM on this machine judges relevance better than chance, so the judges are simulated
over the qrels: ``oracle`` prefers the passage with the higher judged relevance;
``noisy p`` answers like the oracle but wrongly with probability p per call; ``biased b``
answers "A" (the first passage) with probability b, else like the oracle. Equal relevance
counts as unsure, and an unsure judge answers "A". Each judge runs through the real
``PairwiseLLMReranker`` (both-order querying, caching, budget), only the judge is simulated.
Reports nDCG@10 of the reranked top-``depth`` first stage and LLM calls per query.
"""

from __future__ import annotations

import argparse
import asyncio
import random
from pathlib import Path

import numpy as np
from _report import write_json
from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode

from cluster_retriever import PairwiseLLMReranker
from cluster_retriever.datasets import load_beir
from cluster_retriever.embeddings import embed_query, embed_texts, resolve_embed_model
from cluster_retriever.evaluation.metrics import ir_metrics

CISI = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "cisi"


class SimulatedJudge:
    """Judges by the qrels; passages are document ids."""

    def __init__(self, qrels: dict[str, dict[str, int]], noise: float = 0.0, bias: float = 0.0, seed: int = 0) -> None:
        self.qrels, self.noise, self.bias = qrels, noise, bias
        self.random = random.Random(seed)
        self.cache_key = f"sim|{noise}|{bias}|{seed}"
        self.query_id = ""

    async def __call__(self, query: str, passage_a: str, passage_b: str) -> str:
        judged = self.qrels.get(self.query_id, {})
        a, b = judged.get(passage_a, 0), judged.get(passage_b, 0)
        if a == b or self.random.random() < self.bias:
            return "A"
        truth = "A" if a > b else "B"
        if self.random.random() < self.noise:
            return "B" if truth == "A" else "A"
        return truth


def first_stage(data, depth: int) -> dict[str, list[str]]:
    model = resolve_embed_model()
    vectors = embed_texts(model, [d.get_content(metadata_mode="embed") for d in data.corpus], show_progress=True)
    ids = [d.doc_id for d in data.corpus]
    runs = {}
    for qid, text in data.judged_queries.items():
        scores = vectors @ embed_query(model, text)
        runs[qid] = [ids[i] for i in np.argsort(-scores)[:depth]]
    return runs


def rerank_all(runs, judge, method: str, top_n: int, both_orders: bool = True) -> tuple[dict, float]:
    reranker = PairwiseLLMReranker(model="simulated", method=method, top_n=top_n, both_orders=both_orders, judge=judge)
    ranked, calls = {}, []
    for qid, doc_ids in runs.items():
        judge.query_id = qid
        nodes = [NodeWithScore(node=TextNode(id_=d, text=d), score=1.0 - r / len(doc_ids)) for r, d in enumerate(doc_ids)]
        out = asyncio.run(reranker.apostprocess_nodes(nodes, QueryBundle(query_str=f"query {qid}")))
        ranked[qid] = {n.node.node_id: float(top_n - r) for r, n in enumerate(out)}
        calls.append(reranker.last_stats.llm_calls)
    return ranked, float(np.mean(calls))


JUDGES = {
    "noisy p=0.1": {"noise": 0.1},
    "noisy p=0.2": {"noise": 0.2},
    "noisy 0.1 + biased 0.2": {"noise": 0.1, "bias": 0.2},
    "noisy 0.2 + biased 0.3": {"noise": 0.2, "bias": 0.3},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", type=Path, default=CISI)
    parser.add_argument("--settings", default="30:5,50:10,100:10", help="depth:top_n pairs")
    parser.add_argument("--methods", default="allpair,budgeted,tournament")
    parser.add_argument("--json", type=Path, default=Path("runs/rerank_simulation.json"))
    args = parser.parse_args()
    data = load_beir(args.dataset)
    settings = [tuple(int(x) for x in pair.split(":")) for pair in args.settings.split(",")]
    runs_at = first_stage(data, max(depth for depth, _ in settings))
    rows = []
    for depth, top_n in settings:
        runs = {q: ds[:depth] for q, ds in runs_at.items()}
        base = ir_metrics(data.qrels, {q: {d: -r for r, d in enumerate(ds)} for q, ds in runs.items()}, ["ndcg@10"])["ndcg@10"]
        for judge_name, params in JUDGES.items():
            for method in args.methods.split(","):
                ranked, calls = rerank_all(runs, SimulatedJudge(data.qrels, **params), method, top_n)
                ndcg = ir_metrics(data.qrels, ranked, ["ndcg@10"])["ndcg@10"]
                row = {"depth": depth, "top_n": top_n, "judge": judge_name, "method": method, "ndcg@10": ndcg, "calls": calls}
                rows.append({**row, "first_stage_ndcg@10": base})
                print(row, flush=True)
    print(f"{'depth':>5} {'judge':<24}{'method':<12}{'nDCG@10':>9}{'x allpair':>10}{'calls/q':>9}")
    for row in rows:
        ref = next(r for r in rows if (r["depth"], r["judge"], r["method"]) == (row["depth"], row["judge"], "allpair"))
        print(
            f"{row['depth']:>5} {row['judge']:<24}{row['method']:<12}{row['ndcg@10']:>9.3f}"
            f"{row['ndcg@10'] / ref['ndcg@10']:>10.3f}{row['calls']:>9.0f}"
        )
    write_json(args.json, {"rows": rows})


if __name__ == "__main__":
    main()
