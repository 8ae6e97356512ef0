"""Pairwise reranking algorithms under simulated judges, on human relevance judgments.

    python bench/rerank_simulation.py [--dataset ../shared/datasets/cisi] [--settings 30:5,50:10:150]
        [--methods allpair,budgeted,setwise] [--judges "noisy p=0.2,realistic"] [--seeds 5]

No LLM on this machine judges relevance better than chance, so the judges are simulated
over the qrels: ``noisy p`` answers like the oracle (the passage with the higher judged
relevance) but wrongly with probability p per call; ``biased b`` answers "A" (the first
passage) with probability b, else like the oracle; equal relevance counts as unsure, and an
unsure judge answers "A". ``realistic`` errs the way a small model does, consistently: it
perceives each passage's relevance as its judged grade plus a fixed error of its own
(normal, sd 0.5), answers "A" with probability sigmoid(3 * (perceived A - perceived B) + 0.8)
(the 0.8: a position bias, 69% "A" between two equal passages), so its accuracy grows with
the relevance gap, and it gives the same answer to the same question (temperature 0).
``realistic+logprobs`` is the same judge, same answers, also reporting the probabilities it
answers by (as ``use_logprobs=True`` reads them); ``realistic+logprobs x3`` reports them
overconfident, as small models are (each log-probability times 3, renormalized).
Each judge runs through the real ``PairwiseLLMReranker`` (both-order querying, caching,
budget), only the judge is simulated. Reports nDCG@10 of the reranked top-``depth`` first
stage, as a ratio of all-pairs with the same judge and seed (mean and range over ``--seeds``:
one seed's ratio moves by about +-0.02), and LLM calls per query.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import random
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from _first_stage import CISI, first_stage
from _report import print_table, write_json
from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode
from tqdm import tqdm

from cluster_retriever import PairwiseLLMReranker
from cluster_retriever.datasets import load_beir
from cluster_retriever.evaluation.metrics import ir_metrics
from cluster_retriever.rerank.judge import Judged


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


def rerank_all(
    runs, judge, method: str, top_n: int, both_orders: bool = True, max_calls: int | None = None
) -> tuple[dict, float]:
    reranker = PairwiseLLMReranker(
        model="simulated", method=method, top_n=top_n, both_orders=both_orders, judge=judge, max_calls=max_calls
    )
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
        self,
        qrels: dict[str, dict[str, int]],
        seed: int = 0,
        error_sd: float = 0.5,
        sharpness: float = 3.0,
        bias: float = 0.8,
        logprobs: float | None = None,
    ) -> None:
        super().__init__(qrels, seed=seed)
        self.error_sd, self.sharpness, self.position_bias = error_sd, sharpness, bias
        self.logprobs = logprobs  # None: plain answers; else the probabilities reported, to this power
        # the answers do not depend on logprobs: the draws share the plain judge's seed
        self.draws = f"realistic|{error_sd}|{sharpness}|{bias}|{seed}"
        self.cache_key = f"{self.draws}|{logprobs}"
        self.setwise_cache_key = f"realistic-set|{error_sd}|{sharpness}|{bias}|{seed}|{logprobs}"

    def _draw(self, *key: str) -> random.Random:
        return random.Random(f"{self.draws}|{self.query_id}|{'|'.join(key)}")

    def perceived(self, passage: str) -> float:
        return self.qrels.get(self.query_id, {}).get(passage, 0) + self._draw(passage).gauss(0, self.error_sd)

    async def choose(self, query: str, passages: list[str]) -> str | Judged:  # type: ignore[override]
        """Each passage by ``exp(sharpness * perceived + bias if shown first)``: for a pair,
        P("A") = sigmoid(sharpness * (perceived A - perceived B) + bias)."""
        logits = [self.sharpness * self.perceived(p) + (self.position_bias if i == 0 else 0.0) for i, p in enumerate(passages)]
        weights = [math.exp(x - max(logits)) for x in logits]
        draw, total, letter = self._draw(*passages).random() * sum(weights), 0.0, "ABCDEFGH"[len(passages) - 1]
        for i, weight in enumerate(weights):
            total += weight
            if draw < total:
                letter = "ABCDEFGH"[i]
                break
        if self.logprobs is None:
            return letter
        reported = [w**self.logprobs for w in weights]
        return Judged(letter, shares=tuple(w / sum(reported) for w in reported))


JUDGES = {
    "noisy p=0.1": {"noise": 0.1},
    "noisy p=0.2": {"noise": 0.2},
    "noisy 0.1 + biased 0.2": {"noise": 0.1, "bias": 0.2},
    "noisy 0.2 + biased 0.3": {"noise": 0.2, "bias": 0.3},
    "realistic": {},
    "realistic+logprobs": {"logprobs": 1.0},
    "realistic+logprobs x3": {"logprobs": 3.0},
}


def make_judge(qrels: dict[str, dict[str, int]], name: str, seed: int = 0) -> SimulatedJudge:
    if name.startswith("realistic"):
        return RealisticJudge(qrels, seed=seed, **JUDGES[name])
    return SimulatedJudge(qrels, seed=seed, **JUDGES[name])


def parse_settings(text: str) -> list[tuple[int, int, int | None]]:
    """``depth:top_n`` or ``depth:top_n:max_calls`` pairs, comma-separated."""
    settings = []
    for item in text.split(","):
        parts = [int(x) for x in item.split(":")]
        if len(parts) not in (2, 3):
            raise SystemExit(f"--settings: {item!r} is not depth:top_n or depth:top_n:max_calls (e.g. 30:5 or 50:10:150)")
        settings.append((parts[0], parts[1], parts[2] if len(parts) == 3 else None))
    return settings


_WORLD: dict = {}


def _start_worker(dataset: Path, runs_at: dict[str, list[str]]) -> None:
    _WORLD.update(qrels=load_beir(dataset).qrels, runs_at=runs_at)


def _run_cell(cell: tuple[int, int, int | None, str, int, str]) -> dict:
    depth, top_n, max_calls, judge_name, seed, method = cell
    qrels = _WORLD["qrels"]
    runs = {q: ds[:depth] for q, ds in _WORLD["runs_at"].items()}
    judge = make_judge(qrels, judge_name, seed)
    ranked, calls = rerank_all(runs, judge, method, top_n, max_calls=max_calls)  # allpair cells have None
    return {
        "depth": depth, "top_n": top_n, "max_calls": max_calls, "judge": judge_name, "seed": seed, "method": method,
        "ndcg@10": ir_metrics(qrels, ranked, ["ndcg@10"])["ndcg@10"], "calls": calls,
    }  # fmt: skip


def summarize(rows: list[dict]) -> list[dict]:
    """One line per setting x judge x method: nDCG@10 as a ratio of all-pairs with the same judge
    and seed, its mean and range over the seeds."""
    refs = {(r["depth"], r["top_n"], r["judge"], r["seed"]): r["ndcg@10"] for r in rows if r["method"] == "allpair"}
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault((row["depth"], row["top_n"], row["max_calls"], row["judge"], row["method"]), []).append(row)
    lines = []
    for (depth, top_n, max_calls, judge, method), members in groups.items():
        ratios = [
            m["ndcg@10"] / refs[(depth, top_n, judge, m["seed"])] for m in members if (depth, top_n, judge, m["seed"]) in refs
        ]
        lines.append({
            "depth": depth, "top_n": top_n, "max_calls": max_calls, "judge": judge, "method": method, "seeds": len(members),
            "ndcg@10": float(np.mean([m["ndcg@10"] for m in members])), "calls": float(np.mean([m["calls"] for m in members])),
            "x_allpair": float(np.mean(ratios)) if ratios else None,
            "x_allpair_min": min(ratios) if ratios else None, "x_allpair_max": max(ratios) if ratios else None,
        })  # fmt: skip
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", type=Path, default=CISI)
    parser.add_argument("--settings", default="30:5,50:10,100:10", help="depth:top_n[:max_calls] (default budget without it)")
    parser.add_argument("--methods", default="allpair,budgeted,tournament", help="allpair gives the ratios' reference")
    parser.add_argument("--judges", default=",".join(JUDGES), help=f"comma-separated, of: {', '.join(JUDGES)}")
    parser.add_argument("--seeds", type=int, default=1, help="judge seeds 0..N-1; ratios are taken per seed, then averaged")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="worker processes")
    parser.add_argument("--json", type=Path, default=Path("runs/rerank_simulation.json"))
    args = parser.parse_args()
    settings = parse_settings(args.settings)
    judges = args.judges.split(",")
    if unknown := set(judges) - set(JUDGES):
        raise SystemExit(f"--judges: unknown {sorted(unknown)}; choose from {', '.join(JUDGES)}")
    data = load_beir(args.dataset)
    runs_at = first_stage(data, max(depth for depth, _, _ in settings))
    methods = args.methods.split(",")
    seeds = range(args.seeds)
    cells = [(d, k, c, j, s, m) for d, k, c in settings for j in judges for s in seeds for m in methods if m != "allpair"]
    if "allpair" in methods:  # the reference: once per depth, whatever the budget
        depths = sorted({(d, k) for d, k, _ in settings})
        cells += [(d, k, None, j, s, "allpair") for d, k in depths for j in judges for s in seeds]
    cells.sort(key=lambda cell: -cell[0] * (100 if cell[5] == "allpair" else 1))  # the longest first
    rows = []
    with ProcessPoolExecutor(args.jobs, initializer=_start_worker, initargs=(args.dataset, runs_at)) as pool:
        for row in tqdm(pool.map(_run_cell, cells), total=len(cells), desc="cells"):
            rows.append(row)
    base = {
        d: ir_metrics(data.qrels, {q: {x: -r for r, x in enumerate(ds[:d])} for q, ds in runs_at.items()}, ["ndcg@10"])["ndcg@10"]
        for d, _, _ in settings
    }
    lines = summarize(rows)
    lines.sort(key=lambda line: (line["depth"], line["max_calls"] or 0, list(JUDGES).index(line["judge"]), line["method"]))
    print_table(
        f"nDCG@10 as a ratio of all-pairs with the same judge and seed: mean (min-max) over {args.seeds} seed(s)",
        ["depth -> top", "judge", "method", "calls/q", "nDCG@10", "x all-pairs"],
        [
            (
                f"{x['depth']} -> {x['top_n']}", x["judge"], x["method"], f"{x['calls']:.0f}", f"{x['ndcg@10']:.3f}",
                "-" if x["x_allpair"] is None else f"{x['x_allpair']:.3f} ({x['x_allpair_min']:.3f}-{x['x_allpair_max']:.3f})",
            )
            for x in lines
        ],
    )  # fmt: skip
    write_json(args.json, {"first_stage_ndcg@10": base, "summary": lines, "rows": rows})


if __name__ == "__main__":
    main()
