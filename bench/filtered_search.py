"""Filtered search at scale: ClusterVectorStore vs Chroma's own where-filtered query vs
LlamaIndex's VectorStoreIndex on a ChromaVectorStore, with the same MetadataFilters, in one run.

    python bench/filtered_search.py [--n 100000] [--queries 200]

Vectors are synthetic on the manifold of real all-MiniLM-L6-v2 embeddings of CISI (as in
routing_latency.py); each document has an integer ``bucket`` in 0..199, and the filters
``bucket < 100``, ``bucket < 10`` and ``bucket == 0`` match 50%, 5% and 0.5% of the corpus.
Recall@10 is against exact filtered search (numpy over the matching vectors). The cluster
store adopts the collection (zero copy) at its defaults. ``first ms`` is the first query of
a filter (its mask is computed then and cached for the next ones). Writes runs/filtered_search.json.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from _report import print_table, write_json
from _vectors import CISI, NOISE, sample_between
from llama_index.core import VectorStoreIndex
from llama_index.core.schema import QueryBundle, TextNode
from llama_index.core.vector_stores.types import FilterOperator, MetadataFilter, MetadataFilters, VectorStoreQuery
from llama_index.vector_stores.chroma import ChromaVectorStore

from cluster_retriever import ClusterVectorStore
from cluster_retriever.datasets import load_beir
from cluster_retriever.embeddings import embed_texts, resolve_embed_model
from cluster_retriever.store.clients import make_client
from cluster_retriever.store.records import chroma_where

FILTERS = {
    "50%": MetadataFilter(key="bucket", operator=FilterOperator.LT, value=100),
    "5%": MetadataFilter(key="bucket", operator=FilterOperator.LT, value=10),
    "0.5%": MetadataFilter(key="bucket", operator=FilterOperator.EQ, value=0),
}


def p50(times: list[float]) -> float:
    return float(np.percentile(times, 50))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--out", type=Path, default=Path("runs/filtered_search.json"))
    args = parser.parse_args()
    embed_model = resolve_embed_model()
    data = load_beir(CISI)
    anchors = embed_texts(embed_model, [d.get_content(metadata_mode="embed") for d in data.corpus])
    rng = np.random.default_rng(0)
    vectors = sample_between(anchors, args.n, NOISE, rng)
    queries = sample_between(anchors, args.queries, NOISE, rng)
    buckets = rng.integers(0, 200, args.n)
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        client = make_client(path=folder)
        collection = client.create_collection("app", embedding_function=None)
        chroma = ChromaVectorStore(chroma_collection=collection)
        started = time.perf_counter()
        step = 5000
        for start in range(0, args.n, step):
            nodes = [
                TextNode(id_=f"d{i}", text=f"document {i}", metadata={"bucket": int(buckets[i])}, embedding=vectors[i].tolist())
                for i in range(start, min(args.n, start + step))
            ]
            chroma.add(nodes)
        load_s = time.perf_counter() - started
        started = time.perf_counter()
        store = ClusterVectorStore.from_chroma(chroma, embed_model=embed_model)
        adopt_s = time.perf_counter() - started
        ours_index = VectorStoreIndex.from_vector_store(store, embed_model=embed_model)
        theirs_index = VectorStoreIndex.from_vector_store(chroma, embed_model=embed_model)
        rows = []
        results: dict[str, dict] = {"n": args.n, "queries": args.queries, "load_s": load_s, "adopt_s": adopt_s, "filters": {}}
        for label, condition in FILTERS.items():
            filters = MetadataFilters(filters=[condition])
            where = chroma_where(filters)
            allowed = np.flatnonzero(
                buckets < condition.value if condition.operator == FilterOperator.LT else buckets == condition.value
            )
            exact = [set(f"d{allowed[j]}" for j in np.argsort(-(vectors[allowed] @ q))[:10]) for q in queries]

            def ours(q: np.ndarray, filters: MetadataFilters = filters) -> list[str]:
                return list(
                    store.query(VectorStoreQuery(query_embedding=q.tolist(), similarity_top_k=10, filters=filters)).ids or []
                )

            def chroma_where_query(q: np.ndarray, where: dict = where) -> list[str]:
                found = collection.query(
                    query_embeddings=[q], n_results=10, where=where, include=["documents", "metadatas", "distances"]
                )
                return list(found["ids"][0])

            ours_retriever = ours_index.as_retriever(similarity_top_k=10, filters=filters)
            theirs_retriever = theirs_index.as_retriever(similarity_top_k=10, filters=filters)

            def via(retriever: Any) -> Callable[[np.ndarray], list[str]]:
                return lambda vector: [
                    n.node.node_id for n in retriever.retrieve(QueryBundle(query_str="q", embedding=vector.tolist()))
                ]

            methods = {
                "cluster store (query)": ours,
                "chroma where (query)": chroma_where_query,
                "VectorStoreIndex on cluster store": via(ours_retriever),
                "VectorStoreIndex on ChromaVectorStore": via(theirs_retriever),
            }
            measured = {}
            for name, search in methods.items():
                first_started = time.perf_counter()
                search(queries[0])
                first_ms = (time.perf_counter() - first_started) * 1000
                times, recalls = [], []
                for q, truth in zip(queries, exact, strict=True):
                    started = time.perf_counter()
                    found = search(q)
                    times.append((time.perf_counter() - started) * 1000)
                    recalls.append(len(truth & set(found)) / max(len(truth), 1))
                measured[name] = {"p50_ms": p50(times), "recall@10": float(np.mean(recalls)), "first_ms": first_ms}
            for name, row in measured.items():
                base = measured["chroma where (query)" if "(query)" in name else "VectorStoreIndex on ChromaVectorStore"]
                row["speed_up"] = base["p50_ms"] / row["p50_ms"]
                rows.append(
                    [
                        label,
                        name,
                        f"{row['recall@10']:.3f}",
                        f"{row['p50_ms']:.2f}",
                        f"{row['first_ms']:.1f}",
                        f"{row['speed_up']:.1f}x",
                    ]
                )
            results["filters"][label] = {"matching": int(len(allowed)), **measured}
        print_table(
            f"Filtered search, {args.n:,} documents, {args.queries} queries (adopted in {adopt_s:.0f} s)",
            ["filter matches", "method", "recall@10", "p50 ms", "first ms", "speed-up"],
            rows,
        )
        print(
            "speed-up: raw queries against Chroma's where query; VectorStoreIndex rows against VectorStoreIndex on ChromaVectorStore"
        )
        write_json(args.out, results)
        store.index.close()


if __name__ == "__main__":
    main()
