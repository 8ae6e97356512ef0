"""Reranker wall time against an LLM that answers after a fixed delay.

    python bench/rerank_latency.py [--delay 0.1] [--candidates 12]

A stub Ollama server on 127.0.0.1 (the one the tests use; it judges by word overlap), in a
process of its own as a real server would be, answers every call after ``--delay`` seconds.
For each method and ``max_concurrency`` in 1, 4, 16 (and unbounded: 1,000), it reports LLM
calls per query and wall time, next to calls x delay / concurrency, the ideal for perfectly
parallel calls, and the CPU time this (client) process spent per call. The unbounded row
shows each method's floor: its rounds run one after another. Writes runs/rerank_latency.json.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from llama_index.core.schema import NodeWithScore, TextNode

from cluster_retriever import PairwiseLLMReranker

UNBOUNDED = 1000
ROOT = Path(__file__).resolve().parents[1]
WORDS = "pastry chef laminates croissant dough butter oven bakery sugar flour yeast".split()


def candidates(n: int) -> list[NodeWithScore]:
    return [NodeWithScore(node=TextNode(id_=f"n{i}", text=" ".join(WORDS[: (i * 7) % len(WORDS) + 1])), score=1.0) for i in range(n)]


@contextmanager
def stub_server(delay: float) -> Iterator[str]:
    server = subprocess.Popen(
        [sys.executable, "-m", "tests.stub_ollama", "--delay", str(delay)], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    try:
        yield server.stdout.readline().strip()
    finally:
        server.kill()
        server.wait()


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--delay", type=float, default=0.1)
    parser.add_argument("--candidates", type=int, default=20)
    parser.add_argument("--top-n", type=int, default=5)
    parser.add_argument("--json", type=Path, default=Path("runs/rerank_latency.json"))
    args = parser.parse_args()
    rows = []
    with stub_server(args.delay) as url:
        for method in ("tournament", "allpair", "heapsort", "sliding"):
            for concurrency in (1, 4, 16, UNBOUNDED):
                reranker = PairwiseLLMReranker(
                    model="ollama_chat/stub", api_base=url, method=method, top_n=args.top_n, max_concurrency=concurrency
                )
                cpu = cpu_seconds()
                reranker.postprocess_nodes(candidates(args.candidates), query_str="how do pastry chefs laminate croissant dough")
                stats = reranker.last_stats
                rows.append({
                    "method": method, "max_concurrency": concurrency, "llm_calls": stats.llm_calls, "wall_s": stats.wall_s,
                    "ideal_s": stats.llm_calls * args.delay / concurrency,
                    "client_cpu_ms_per_call": (cpu_seconds() - cpu) * 1000 / stats.llm_calls,
                })
    print(f"stub LLM delay {args.delay * 1000:.0f} ms; {args.candidates} candidates -> top {args.top_n}")
    print(f"{'method':<12}{'conc.':>10}{'calls':>7}{'wall s':>9}{'ideal s':>9}{'wall/ideal':>12}{'client CPU ms/call':>20}")
    for row in rows:
        unbounded = row["max_concurrency"] == UNBOUNDED
        ratio = "floor" if unbounded else f"{row['wall_s'] / row['ideal_s']:.2f}"
        print(
            f"{row['method']:<12}{'unbounded' if unbounded else row['max_concurrency']:>10}{row['llm_calls']:>7}"
            f"{row['wall_s']:>9.2f}{'-' if unbounded else format(row['ideal_s'], '.2f'):>9}{ratio:>12}"
            f"{row['client_cpu_ms_per_call']:>20.1f}"
        )
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
