"""Pairwise reranking algorithms under simulated judges, on human relevance judgments.

    python bench/rerank_simulation.py [--dataset ../shared/datasets/cisi] [--depth 50] [--top-n 10]

No LLM on this machine judges relevance better than chance, so the judges are simulated
over the qrels: ``noisy p`` answers like the oracle (the passage with the higher judged
relevance) but wrongly with probability p per call; ``biased b`` answers "A" (the first
passage) with probability b, else like the oracle; equal relevance counts as unsure, and an
unsure judge answers "A". ``realistic`` errs the way a small model does, consistently: it
perceives each passage's relevance as its judged grade plus a fixed error of its own
(normal, sd 0.5), answers "A" with probability sigmoid(3 * (perceived A - perceived B) + 0.8)
(the 0.8: a position bias, 69% "A" between two equal passages), so its accuracy grows with
the relevance gap, and it gives the same answer to the same question (temperature 0).
Each judge runs through the real ``PairwiseLLMReranker`` (both-order querying, caching,
budget), only the judge is simulated. Reports nDCG@10 of the reranked top-``depth`` first
stage, as a ratio of all-pairs with the same judge, and LLM calls per query.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import random
from pathlib import Path

import numpy as np
from _first_stage import CISI, first_stage
from _report import write_json
from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode

from cluster_retriever import PairwiseLLMReranker
from cluster_retriever.datasets import load_beir
from cluster_retriever.evaluation.metrics import ir_metrics


class SimulatedJudge:
    """Judges by the qrels; passages are document ids."""

    def __init__(self, qrels: dict[str, dict[str, int]], noise: float = 0.0, bias: float = 0.0, seed: int = 0) -> None:
        self.qrels, self.noise, self.bias = qrels, noise, bias
        self.random = random.Random(seed)
        self.cache_key = f"sim|{noise}|{bias}|{seed}"
        self.setwise_cache_key = f"sim-set|{noise}|{bias}|{seed}"
        self.query_id = ""

    async def __call__(self, query: str, passage_a: str, passage_b: str) -> str:
        return await self.choose(query, [passage_a, passage_b])

    async def choose(self, query: str, passages: list[str]) -> str:
        """The letter of the passage judged most relevant (the first of equals: unsure answers
        "A"); with probability ``bias`` "A" whatever was shown; wrong with probability ``noise``
        (one of the others, at random)."""
        judged = self.qrels.get(self.query_id, {})
        grades = [judged.get(p, 0) for p in passages]
        if len(set(grades)) == 1 or self.random.random() < self.bias:
            return "A"
        best = grades.index(max(grades))
        if self.random.random() < self.noise:
            others = [i for i in range(len(passages)) if i != best]
            best = others[0] if len(others) == 1 else self.random.choice(others)  # a pair draws no more than it did
        return "ABCDEFGH"[best]


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


class RealisticJudge(SimulatedJudge):
    """Consistent errors per passage, accuracy growing with the relevance gap, position bias."""

    def __init__(
        self, qrels: dict[str, dict[str, int]], seed: int = 0, error_sd: float = 0.5, sharpness: float = 3.0, bias: float = 0.8
    ) -> None:
        super().__init__(qrels, seed=seed)
        self.error_sd, self.sharpness, self.position_bias = error_sd, sharpness, bias
        self.cache_key = f"realistic|{error_sd}|{sharpness}|{bias}|{seed}"
        self.setwise_cache_key = f"realistic-set|{error_sd}|{sharpness}|{bias}|{seed}"

    def _draw(self, *key: str) -> random.Random:
        return random.Random(f"{self.cache_key}|{self.query_id}|{'|'.join(key)}")

    def perceived(self, passage: str) -> float:
        return self.qrels.get(self.query_id, {}).get(passage, 0) + self._draw(passage).gauss(0, self.error_sd)

    async def choose(self, query: str, passages: list[str]) -> str:
        """Each passage by ``exp(sharpness * perceived + bias if shown first)``: for a pair,
        P("A") = sigmoid(sharpness * (perceived A - perceived B) + bias)."""
        weights = [
            math.exp(self.sharpness * self.perceived(p) + (self.position_bias if i == 0 else 0.0)) for i, p in enumerate(passages)
        ]
        draw, total = self._draw(*passages).random() * sum(weights), 0.0
        for i, weight in enumerate(weights):
            total += weight
            if draw < total:
                return "ABCDEFGH"[i]
        return "ABCDEFGH"[len(passages) - 1]


JUDGES = {
    "noisy p=0.1": {"noise": 0.1},
    "noisy p=0.2": {"noise": 0.2},
    "noisy 0.1 + biased 0.2": {"noise": 0.1, "bias": 0.2},
    "noisy 0.2 + biased 0.3": {"noise": 0.2, "bias": 0.3},
    "realistic": {},
}


def make_judge(qrels: dict[str, dict[str, int]], name: str) -> SimulatedJudge:
    return RealisticJudge(qrels) if name == "realistic" else SimulatedJudge(qrels, **JUDGES[name])


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
        for judge_name in JUDGES:
            for method in args.methods.split(","):
                ranked, calls = rerank_all(runs, make_judge(data.qrels, judge_name), method, top_n)
                ndcg = ir_metrics(data.qrels, ranked, ["ndcg@10"])["ndcg@10"]
                row = {"depth": depth, "top_n": top_n, "judge": judge_name, "method": method, "ndcg@10": ndcg, "calls": calls}
                rows.append({**row, "first_stage_ndcg@10": base})
                print(row, flush=True)
    print(f"{'depth':>5} {'judge':<24}{'method':<12}{'nDCG@10':>9}{'x allpair':>10}{'calls/q':>9}")
    for row in rows:
        ref = next((r for r in rows if (r["depth"], r["judge"], r["method"]) == (row["depth"], row["judge"], "allpair")), row)
        print(
            f"{row['depth']:>5} {row['judge']:<24}{row['method']:<12}{row['ndcg@10']:>9.3f}"
            f"{row['ndcg@10'] / ref['ndcg@10']:>10.3f}{row['calls']:>9.0f}"
        )
    write_json(args.json, {"rows": rows})


if __name__ == "__main__":
    main()
