"""Throughput of concurrent ``aretrieve`` calls, embedded Chroma vs a Chroma server.

    python bench/concurrency.py [--dataset ../shared/datasets/cisi] [--queries 200]

One process, one ClusterRetriever (default settings, all-MiniLM-L6-v2, query embedding
included), 1, 4 and 16 callers in flight on one event loop. The server is started from the
installed ``chroma`` command on 127.0.0.1 and stopped at the end. Results are checked
against the sequential ones. Writes runs/concurrency.json.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _report import write_json  # noqa: E402

from cluster_retriever import ClusterIndex, ClusterRetriever  # noqa: E402
from cluster_retriever.datasets import load_beir  # noqa: E402
from cluster_retriever.embeddings import resolve_embed_model  # noqa: E402
from cluster_retriever.evaluation.embedding_cache import CachedEmbedding  # noqa: E402
from tests.chroma_server import chroma_server  # noqa: E402

CISI = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "cisi"


async def throughput(retriever: ClusterRetriever, queries: list[str], callers: int) -> tuple[float, list[list[str]]]:
    gate = asyncio.Semaphore(callers)

    async def one(query: str) -> list[str]:
        async with gate:
            return [h.node.node_id for h in await retriever.aretrieve(query)]

    started = time.perf_counter()
    results = await asyncio.gather(*(one(q) for q in queries))
    return len(queries) / (time.perf_counter() - started), results


def measure(index: ClusterIndex, queries: list[str]) -> dict[str, float]:
    retriever = ClusterRetriever(index, similarity_top_k=10)
    expected = [[h.node.node_id for h in retriever.retrieve(q)] for q in queries]
    row = {}
    for callers in (1, 4, 16):
        qps, results = asyncio.run(throughput(retriever, queries, callers))
        assert results == expected, "concurrent results differ from sequential ones"
        row[f"{callers} callers"] = qps
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", type=Path, default=CISI)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--json", type=Path, default=Path("runs/concurrency.json"))
    args = parser.parse_args()
    data = load_beir(args.dataset)
    queries = (list(data.queries.values()) * 10)[: args.queries]
    embedder = CachedEmbedding(resolve_embed_model(), Path(".cache/embeddings") / data.name)
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        ClusterIndex.build(data.corpus, path=Path(tmp) / "embedded", embed_model=embedder)
        embedder.save()
        rows["embedded"] = measure(ClusterIndex.open(path=Path(tmp) / "embedded", embed_model=embedder), queries)
        with chroma_server(Path(tmp) / "server") as port:
            ClusterIndex.build(data.corpus, host="127.0.0.1", port=port, embed_model=embedder, show_progress=False)
            rows["server"] = measure(ClusterIndex.open(host="127.0.0.1", port=port, embed_model=embedder), queries)
    embedder.save()
    print(f"{len(queries)} queries (embedding cached after the first pass), top 10, default routing; queries/s")
    print(f"{'store':<10}" + "".join(f"{k:>12}" for k in rows["embedded"]))
    for store, row in rows.items():
        print(f"{store:<10}" + "".join(f"{v:>12.1f}" for v in row.values()))
    write_json(args.json, rows)


if __name__ == "__main__":
    main()
