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
import resource
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from _report import print_table, write_json
from llama_index.core.schema import NodeWithScore, TextNode

from cluster_retriever import PairwiseLLMReranker

UNBOUNDED = 1000
ROOT = Path(__file__).resolve().parents[1]
WORDS = "pastry chef laminates croissant dough butter oven bakery sugar flour yeast".split()


def candidates(n: int) -> list[NodeWithScore]:
    return [
        NodeWithScore(node=TextNode(id_=f"n{i}", text=" ".join(WORDS[: (i * 7) % len(WORDS) + 1])), score=1.0) for i in range(n)
    ]


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


def _cells(row: dict) -> list:
    if row["max_concurrency"] == UNBOUNDED:  # the method's floor: no ideal to compare with
        concurrency, ideal, ratio = "unbounded", "-", "floor"
    else:
        concurrency, ideal, ratio = row["max_concurrency"], f"{row['ideal_s']:.2f}", f"{row['wall_s'] / row['ideal_s']:.2f}"
    return [
        row["method"],
        concurrency,
        row["llm_calls"],
        f"{row['wall_s']:.2f}",
        ideal,
        ratio,
        f"{row['client_cpu_ms_per_call']:.1f}",
    ]


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
                rows.append(
                    {
                        "method": method,
                        "max_concurrency": concurrency,
                        "llm_calls": stats.llm_calls,
                        "wall_s": stats.wall_s,
                        "ideal_s": stats.llm_calls * args.delay / concurrency,
                        "client_cpu_ms_per_call": (cpu_seconds() - cpu) * 1000 / stats.llm_calls,
                    }
                )
    print_table(
        f"stub LLM delay {args.delay * 1000:.0f} ms; {args.candidates} candidates -> top {args.top_n}",
        ["method", "conc.", "calls", "wall s", "ideal s", "wall/ideal", "client CPU ms/call"],
        [_cells(row) for row in rows],
    )
    write_json(args.json, rows)


if __name__ == "__main__":
    main()
