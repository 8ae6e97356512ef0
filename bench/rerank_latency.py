"""Reranker wall time against an LLM that answers after a fixed delay.

    python bench/rerank_latency.py [--delay 0.1] [--candidates 12]

A stub Ollama server on 127.0.0.1 (the one the tests use; it judges by word overlap) answers
every call after ``--delay`` seconds. For each method and ``max_concurrency`` in 1, 4, 16,
it reports LLM calls per query and wall time, next to calls x delay / concurrency, the
ideal for perfectly parallel calls. Writes runs/rerank_latency.json.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from llama_index.core.schema import NodeWithScore, TextNode  # noqa: E402

from cluster_retriever import PairwiseLLMReranker  # noqa: E402
from tests.stub_ollama import StubOllama  # noqa: E402

WORDS = "pastry chef laminates croissant dough butter oven bakery sugar flour yeast".split()


def candidates(n: int) -> list[NodeWithScore]:
    return [NodeWithScore(node=TextNode(id_=f"n{i}", text=" ".join(WORDS[: (i * 7) % len(WORDS) + 1])), score=1.0) for i in range(n)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--delay", type=float, default=0.1)
    parser.add_argument("--candidates", type=int, default=20)
    parser.add_argument("--top-n", type=int, default=5)
    parser.add_argument("--json", type=Path, default=Path("runs/rerank_latency.json"))
    args = parser.parse_args()
    rows = []
    with StubOllama(delay=args.delay) as stub:
        for method in ("tournament", "allpair", "heapsort", "sliding"):
            for concurrency in (1, 4, 16):
                reranker = PairwiseLLMReranker(
                    model="ollama_chat/stub", api_base=stub.url, method=method, top_n=args.top_n, max_concurrency=concurrency
                )
                reranker.postprocess_nodes(candidates(args.candidates), query_str="how do pastry chefs laminate croissant dough")
                stats = reranker.last_stats
                ideal = stats.llm_calls * args.delay / concurrency
                rows.append({"method": method, "max_concurrency": concurrency, "llm_calls": stats.llm_calls, "wall_s": stats.wall_s, "ideal_s": ideal})
    print(f"stub LLM delay {args.delay * 1000:.0f} ms; {args.candidates} candidates -> top {args.top_n}")
    print(f"{'method':<12}{'conc.':>6}{'calls':>7}{'wall s':>9}{'ideal s':>9}{'wall/ideal':>12}")
    for row in rows:
        print(f"{row['method']:<12}{row['max_concurrency']:>6}{row['llm_calls']:>7}{row['wall_s']:>9.2f}{row['ideal_s']:>9.2f}{row['wall_s'] / row['ideal_s']:>12.2f}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
