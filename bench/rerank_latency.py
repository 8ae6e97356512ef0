"""What a rerank costs against a server that behaves like a laptop's Ollama.

    python bench/rerank_latency.py [--latency 0.25] [--slots 2] [--settings 30:5] [--queries 5] [--logprobs]

The stub Ollama server (tests/stub_ollama.py, in a process of its own as a real server runs)
answers each call after ``--latency`` seconds, ``--slots`` calls at a time (the others queue,
as with OLLAMA_NUM_PARALLEL=2), and judges by the text: the passage sharing more words with
the query wins, ties go to "A" (a position bias). The candidates are real, distinct passages:
each of the first ``--queries`` judged CISI queries' top ``depth`` by all-MiniLM-L6-v2.
Every call goes through litellm. Per method: LLM calls, prompt and completion tokens (as the
server counted them), cost, wall time per query, and nDCG@10 on CISI's judgments beside the
first stage, all-pairs with the same judge (asked of a second stub without latency) and the
perfect order; "gain" is the share of the perfect order's nDCG@10 gain over the first stage
that the method realizes. ``--logprobs``: every method asks the stub's OpenAI-compatible
endpoint (``/v1``, as Ollama serves it) with ``use_logprobs=True``, and weighs each answer by
the letters' probabilities (the stub's: a softmax over the words shared with the query).
Writes runs/rerank_latency.json.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from _first_stage import CISI, first_stage
from _report import print_table, write_json
from llama_index.core.schema import NodeWithScore, TextNode

from cluster_retriever import PairwiseLLMReranker
from cluster_retriever.datasets import load_beir
from cluster_retriever.evaluation.metrics import ir_metrics

ROOT = Path(__file__).resolve().parents[1]


@contextmanager
def stub_server(latency: float, slots: int | None) -> Iterator[str]:
    command = [sys.executable, "-m", "tests.stub_ollama", "--delay", str(latency)]
    server = subprocess.Popen(command + (["--slots", str(slots)] if slots else []), cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        yield server.stdout.readline().strip()
    finally:
        server.kill()
        server.wait()


def ndcg(qrels: dict[str, dict[str, int]], ranked: dict[str, list[str]]) -> float:
    run = {q: {d: float(len(ids) - r) for r, d in enumerate(ids)} for q, ids in ranked.items()}
    return float(ir_metrics({q: qrels[q] for q in ranked}, run, ["ndcg@10"])["ndcg@10"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", type=Path, default=CISI)
    parser.add_argument("--latency", type=float, default=0.25, help="seconds a call takes on the server")
    parser.add_argument("--slots", type=int, default=2, help="calls the server answers at once")
    parser.add_argument("--settings", default="30:5", help="depth:top_n pairs")
    parser.add_argument("--queries", type=int, default=5)
    parser.add_argument("--methods", default="budgeted,tournament")
    parser.add_argument("--logprobs", action="store_true", help="ask /v1 with use_logprobs=True")
    parser.add_argument("--json", type=Path, default=Path("runs/rerank_latency.json"))
    args = parser.parse_args()
    data = load_beir(args.dataset)
    settings = [tuple(int(x) for x in pair.split(":")) for pair in args.settings.split(",")]
    runs = dict(list(first_stage(data, max(depth for depth, _ in settings)).items())[: args.queries])
    text = {d.doc_id: d.get_content() for d in data.corpus}
    rows = []
    with stub_server(args.latency, args.slots) as slow, stub_server(0.0, None) as fast:
        for depth, top_n in settings:
            candidates = {q: ids[:depth] for q, ids in runs.items()}
            perfect = {q: sorted(ids, key=lambda d: -data.qrels[q].get(d, 0))[:top_n] for q, ids in candidates.items()}
            first = ndcg(data.qrels, {q: ids[:top_n] for q, ids in candidates.items()})
            best = ndcg(data.qrels, perfect)
            for method in ["allpair", *args.methods.split(",")]:
                url, concurrency = (fast, 64) if method == "allpair" else (slow, 8)
                served = (
                    {
                        "model": "openai/stub",
                        "api_base": url + "/v1",
                        "use_logprobs": True,
                        "completion_kwargs": {"api_key": "local"},
                    }
                    if args.logprobs
                    else {"model": "ollama_chat/stub", "api_base": url}
                )
                reranker = PairwiseLLMReranker(method=method, top_n=top_n, max_concurrency=concurrency, timeout=120, **served)
                ranked, spent = {}, []
                for qid, ids in candidates.items():
                    nodes = [NodeWithScore(node=TextNode(id_=d, text=text[d]), score=1.0 - r / depth) for r, d in enumerate(ids)]
                    result = reranker.rerank(nodes, data.queries[qid])
                    ranked[qid] = [n.node.node_id for n in result.nodes]
                    spent.append(result.stats)
                quality = ndcg(data.qrels, ranked)
                rows.append(
                    {
                        "depth": depth,
                        "top_n": top_n,
                        "method": method,
                        "latency_s": 0.0 if method == "allpair" else args.latency,
                        "slots": None if method == "allpair" else args.slots,
                        "llm_calls": float(np.mean([s.llm_calls for s in spent])),
                        "prompt_tokens": float(np.mean([s.prompt_tokens for s in spent])),
                        "completion_tokens": float(np.mean([s.completion_tokens for s in spent])),
                        "cost_usd": None
                        if any(s.cost_usd is None for s in spent)
                        else float(np.mean([s.cost_usd for s in spent])),
                        "wall_s_mean": float(np.mean([s.wall_s for s in spent])),
                        "wall_s_max": float(np.max([s.wall_s for s in spent])),
                        "stopped_by": sorted({str(s.stopped_by) for s in spent}),
                        "with_logprobs": float(np.mean([s.with_logprobs for s in spent])),
                        "ndcg@10": quality,
                        "first_stage_ndcg@10": first,
                        "perfect_ndcg@10": best,
                    }
                )
                print(rows[-1], flush=True)
    allpair = {(r["depth"], r["top_n"]): r["ndcg@10"] for r in rows if r["method"] == "allpair"}
    print_table(
        f"{args.queries} CISI queries; server: {args.latency * 1000:.0f} ms a call, {args.slots} at a time (allpair: no latency)"
        + ("; log-probabilities read" if args.logprobs else ""),
        ["depth -> top", "method", "calls", "prompt tok", "compl. tok", "cost $", "wall s", "nDCG@10", "x allpair", "gain"],
        [
            [
                f"{r['depth']} -> {r['top_n']}",
                r["method"],
                f"{r['llm_calls']:.0f}",
                f"{r['prompt_tokens']:.0f}",
                f"{r['completion_tokens']:.0f}",
                "-" if r["cost_usd"] is None else f"{r['cost_usd']:.4f}",
                "-" if r["method"] == "allpair" else f"{r['wall_s_mean']:.1f}",
                f"{r['ndcg@10']:.3f}",
                f"{r['ndcg@10'] / allpair[(r['depth'], r['top_n'])]:.3f}",
                f"{(r['ndcg@10'] - r['first_stage_ndcg@10']) / max(r['perfect_ndcg@10'] - r['first_stage_ndcg@10'], 1e-9):.2f}",
            ]
            for r in rows
        ],
    )
    write_json(args.json, rows)


if __name__ == "__main__":
    main()
