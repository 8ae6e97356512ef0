"""Routing vs the peers a user would pick instead, on the same vectors.

    python bench/routing_latency.py [--sizes 10000,100000,300000] [--queries 300]

Vectors are synthetic but sampled on the manifold of real all-MiniLM-L6-v2 embeddings of
the CISI abstracts (see ``sample_between``), so clusters are as uneven, and neighbourhoods
spread over as many clusters, as real ones; query embedding time is excluded. For each size it reports p50/p95
latency and recall@10 against exact search for: Chroma's unfiltered HNSW query, Chroma's
``where={"cluster_id": {"$in": probed}}`` query, exact numpy search, FAISS IVF-Flat (same
number of lists as our clusters, nprobe = the probe count that scans our default document
budget on even clusters; ids only, no documents),
``ClusterIndex.search`` fetching the winners from Chroma, and the same with records cached in
memory (``cache_records=True``) (raw calls), and LlamaIndex's retriever on a ChromaVectorStore against ClusterRetriever
(routed, default settings), with ratios measured in the same run; plus build times and the
memory each in-memory index holds. Equal recall: FAISS IVF (its own k-means) and our scan
(ids only) are each run at n_probe 1..256; for recall@10 >= 0.95 and >= 0.99 the fastest
setting of each that reaches it is compared. Likewise Chroma's query, on
extra collections created with a higher ef_search (--chroma-ef), against our search with
records cached (both return documents). Writes runs/routing_latency.json.
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path

import faiss
import numpy as np
from _report import write_json
from _vectors import CISI, NOISE, PROBES, fill, recall_at_10, sample_between, timed
from llama_index.core import VectorStoreIndex
from llama_index.core.schema import QueryBundle
from llama_index.vector_stores.chroma import ChromaVectorStore

from cluster_retriever import ClusterIndex, ClusterRetriever, SearchParams
from cluster_retriever.datasets import load_beir
from cluster_retriever.embeddings import embed_texts, resolve_embed_model
from cluster_retriever.routing import budget_in_clusters, route
from cluster_retriever.store.clients import make_client

TARGETS = (0.95, 0.99)


def recall_latency_curve(search_at, queries: np.ndarray, exact: list[list[str]]) -> list[dict]:
    """recall@10 and p50 latency of ``search_at(query, n_probe)`` at each probe count."""
    curve = []
    for n_probe in PROBES:
        found, ms = timed(lambda q, n_probe=n_probe: search_at(q, n_probe), queries)
        curve.append({"n_probe": n_probe, "p50_ms": float(np.percentile(ms, 50)), "recall@10": recall_at_10(found, exact)})
    return curve


def fastest_reaching(curve: list[dict], target: float) -> dict | None:
    reaching = [row for row in curve if row["recall@10"] >= target]
    return min(reaching, key=lambda row: row["p50_ms"]) if reaching else None


def equal_recall(faiss_curve: list[dict], ours_curve: list[dict]) -> dict:
    """For each target recall, the fastest setting of each that reaches it, and the ratio."""
    rows = {}
    for target in TARGETS:
        faiss_best, ours_best = fastest_reaching(faiss_curve, target), fastest_reaching(ours_curve, target)
        ratio = ours_best["p50_ms"] / faiss_best["p50_ms"] if faiss_best and ours_best else None
        rows[str(target)] = {"faiss_ivf_flat": faiss_best, "cluster_scan_ids_only": ours_best, "ours_over_faiss": ratio}
    return rows


def chroma_at_ef(client, ef_search: int, ids, vectors, queries, exact) -> dict:
    """Chroma's query on a collection created with ``ef_search`` (changing it on a loaded
    collection with ``modify`` did not change its recall in our trial)."""
    collection = client.create_collection(
        f"source-ef{ef_search}", embedding_function=None, configuration={"hnsw": {"space": "cosine", "ef_search": ef_search}}
    )
    fill(collection, ids, vectors, client.get_max_batch_size())

    def query(q: np.ndarray) -> list[str]:
        return collection.query(query_embeddings=[q], n_results=10, include=["documents", "metadatas", "distances"])["ids"][0]

    query(queries[0])
    found, ms = timed(query, queries)
    client.delete_collection(collection.name)
    return {"ef_search": ef_search, "p50_ms": float(np.percentile(ms, 50)), "recall@10": recall_at_10(found, exact)}


def bench_size(n: int, anchors: np.ndarray, n_queries: int, rng: np.random.Generator, embed_model, chroma_ef: list[int]) -> dict:
    vectors = sample_between(anchors, n, NOISE, rng)
    queries = sample_between(anchors, n_queries, NOISE, rng)
    ids = [f"doc{i}" for i in range(n)]
    with tempfile.TemporaryDirectory() as tmp:
        client = make_client(tmp)
        # The "existing app": a ChromaVectorStore collection, as LlamaIndex writes it.
        source = client.get_or_create_collection("source", embedding_function=None, configuration={"hnsw": {"space": "cosine"}})
        vector_store = ChromaVectorStore(chroma_collection=source)
        started = time.perf_counter()
        fill(source, ids, vectors, client.get_max_batch_size())  # ChromaVectorStore's own chunks can exceed it
        chroma_build_s = time.perf_counter() - started
        li_retriever = VectorStoreIndex.from_vector_store(vector_store, embed_model=embed_model).as_retriever(similarity_top_k=10)
        started = time.perf_counter()
        index = ClusterIndex.from_vector_store(source, client=client, embed_model=embed_model, name="bench", show_progress=False)
        build_s = time.perf_counter() - started
        started = time.perf_counter()
        quantizer = faiss.IndexFlatIP(vectors.shape[1])
        ivf = faiss.IndexIVFFlat(quantizer, vectors.shape[1], index.n_clusters, faiss.METRIC_INNER_PRODUCT)
        ivf.train(vectors)
        ivf.add(vectors)
        # FAISS's clusters are about even: this nprobe scans our default budget of documents.
        faiss_nprobe = math.ceil(budget_in_clusters(index.n_clusters))
        ivf.nprobe = faiss_nprobe
        faiss_build_s = time.perf_counter() - started
        nodes = index.store.client.get_collection(index.store.nodes_name(index.manifest.generation))
        retriever = ClusterRetriever(index, similarity_top_k=10)

        exact = [[ids[i] for i in np.argsort(-(vectors @ q))[:10]] for q in queries]

        def chroma(q: np.ndarray) -> list[str]:
            return source.query(query_embeddings=[q], n_results=10, include=["documents", "metadatas", "distances"])["ids"][0]

        def filtered(q):
            probed = route(index.lists.centroids @ q, index.lists.sizes)
            where = {"cluster_id": {"$in": [int(c) for c in probed]}}
            return nodes.query(query_embeddings=[q], n_results=10, where=where, include=["documents", "metadatas", "distances"])[
                "ids"
            ][0]

        def exact_numpy(q):
            scores = vectors @ q
            top = np.argpartition(-scores, 10)[:10]
            return [ids[i] for i in top[np.argsort(-scores[top])]]

        def faiss_ivf(q):
            return [ids[i] for i in ivf.search(q[None, :], 10)[1][0] if i >= 0]

        def scan_only(q):  # what FAISS returns: ids, no documents
            return index.lists.scan(q, route(index.lists.centroids @ q, index.lists.sizes), 10).ids

        def routed(q):
            return [h.node.node_id for h in index.search(q, 10).hits]

        cached = ClusterIndex.open("bench", client=client, embed_model=embed_model, cache_records=True)

        def routed_cached(q):
            return [h.node.node_id for h in cached.search(q, 10).hits]

        def ours(q):
            return [h.node.node_id for h in retriever.retrieve(QueryBundle(query_str="q", embedding=q.tolist()))]

        def llamaindex(q):
            return [h.node.node_id for h in li_retriever.retrieve(QueryBundle(query_str="q", embedding=q.tolist()))]

        methods = {
            "exact_numpy": exact_numpy,
            "faiss_ivf_flat": faiss_ivf,
            "chroma_unfiltered": chroma,
            "chroma_where_filter": filtered,
            "cluster_scan_ids_only": scan_only,
            "cluster_index_search": routed,
            "cluster_search_cached": routed_cached,
            "li_chroma_retriever": llamaindex,
            "cluster_retriever": ours,
        }
        for fn in methods.values():  # warm-up
            fn(queries[0])
        rows = {}
        scanned = []
        for name, fn in methods.items():
            sample = queries[:100] if name == "chroma_where_filter" else queries  # it is slow
            found, ms = timed(fn, sample)
            rows[name] = {
                "p50_ms": float(np.percentile(ms, 50)),
                "p95_ms": float(np.percentile(ms, 95)),
                "recall@10": recall_at_10(found, exact[: len(sample)]),
            }
            if name == "cluster_retriever":
                scanned = [retriever.last_stats.fraction_scanned]
                for q in queries[:50]:
                    ours(q)
                    scanned.append(retriever.last_stats.fraction_scanned)
        rows["cluster_retriever"]["fraction_scanned"] = float(np.mean(scanned))

        def faiss_at(q, n_probe):
            ivf.nprobe = n_probe
            return faiss_ivf(q)

        def ours_at(q, n_probe):
            return index.lists.scan(q, route(index.lists.centroids @ q, index.lists.sizes, SearchParams(n_probe=n_probe)), 10).ids

        def cached_at(q, n_probe):
            return [h.node.node_id for h in cached.search(q, 10, SearchParams(n_probe=n_probe)).hits]

        curves = {
            "faiss_ivf_flat": recall_latency_curve(faiss_at, queries, exact),
            "cluster_scan_ids_only": recall_latency_curve(ours_at, queries, exact),
            "cluster_search_cached": recall_latency_curve(cached_at, queries, exact),
        }
        chroma_curve = [
            {"ef_search": 100, "p50_ms": rows["chroma_unfiltered"]["p50_ms"], "recall@10": rows["chroma_unfiltered"]["recall@10"]}
        ]
        chroma_curve += [chroma_at_ef(client, ef, ids, vectors, queries, exact) for ef in chroma_ef]
        vs_chroma = {}
        for target in TARGETS:
            ours_best, chroma_best = (
                fastest_reaching(curves["cluster_search_cached"], target),
                fastest_reaching(chroma_curve, target),
            )
            ratio = chroma_best["p50_ms"] / ours_best["p50_ms"] if ours_best and chroma_best else None
            vs_chroma[str(target)] = {"cluster_search_cached": ours_best, "chroma_unfiltered": chroma_best, "speed_up": ratio}
        ivf.nprobe = faiss_nprobe
        memory_mb = {
            "cluster_index": (
                index.lists.vectors.nbytes + index.lists.centroids.nbytes + sum(len(i) + 57 for i in index.lists.ids)
            )
            / 2**20,
            "faiss_ivf_flat": faiss.serialize_index(ivf).nbytes / 2**20,
        }
        return {
            "n_docs": n,
            "n_clusters": index.n_clusters,
            "faiss_nprobe_default": faiss_nprobe,
            "build_s": {
                "chroma_collection": chroma_build_s,
                "cluster_index_from_collection": build_s,
                "faiss_ivf_flat": faiss_build_s,
            },
            "memory_mb": memory_mb,
            "modes": rows,
            "equal_recall": equal_recall(curves["faiss_ivf_flat"], curves["cluster_scan_ids_only"]),
            "curves": curves,
            "chroma_ef_curve": chroma_curve,
            "equal_recall_vs_chroma": vs_chroma,
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10000,100000,300000")
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--dataset", type=Path, default=CISI)
    parser.add_argument("--json", type=Path, default=Path("runs/routing_latency.json"))
    parser.add_argument(
        "--chroma-ef", default="400,1600", help="extra Chroma collections at these ef_search values ('' for none)"
    )
    args = parser.parse_args()
    embed_model = resolve_embed_model()
    data = load_beir(args.dataset)
    anchors = embed_texts(embed_model, [d.get_content(metadata_mode="embed") for d in data.corpus], show_progress=True)
    rng = np.random.default_rng(0)
    chroma_ef = [int(ef) for ef in args.chroma_ef.split(",") if ef]
    results = [bench_size(int(n), anchors, args.queries, rng, embed_model, chroma_ef) for n in args.sizes.split(",")]
    print(
        "vectors: mixes of neighbouring real all-MiniLM-L6-v2 CISI embeddings + noise (synthetic documents); query embedding excluded"
    )
    print("speed-up = baseline p50 / p50: raw calls vs chroma_unfiltered, retrievers vs li_chroma_retriever")
    print(f"{'docs':>8} {'k':>5} {'method':<22}{'p50 ms':>8}{'p95 ms':>8}{'R@10':>7}{'speed-up':>10}")
    for result in results:
        for name, row in result["modes"].items():
            # raw calls against raw Chroma; retrievers against LlamaIndex's retriever on the same collection
            base = result["modes"]["li_chroma_retriever" if name.endswith("retriever") else "chroma_unfiltered"]["p50_ms"]
            print(
                f"{result['n_docs']:>8} {result['n_clusters']:>5} {name:<22}{row['p50_ms']:>8.2f}{row['p95_ms']:>8.2f}"
                f"{row['recall@10']:>7.3f}{base / row['p50_ms']:>9.2f}x"
            )
        modes = result["modes"]
        print(
            f"{'':>15}cluster_scan_ids_only p50 / faiss_ivf_flat p50 = "
            f"{modes['cluster_scan_ids_only']['p50_ms'] / modes['faiss_ivf_flat']['p50_ms']:.2f} (nprobe {result['faiss_nprobe_default']})"
        )
        for target, row in result["equal_recall"].items():
            faiss_best, ours_best = row["faiss_ivf_flat"], row["cluster_scan_ids_only"]
            if row["ours_over_faiss"] is None:
                print(f"{'':>15}recall@10 >= {target}: not reached by both in n_probe {PROBES}")
                continue
            print(
                f"{'':>15}equal recall@10 >= {target}: faiss nprobe {faiss_best['n_probe']} {faiss_best['p50_ms']:.3f} ms "
                f"(R {faiss_best['recall@10']:.3f}), ours n_probe {ours_best['n_probe']} {ours_best['p50_ms']:.3f} ms "
                f"(R {ours_best['recall@10']:.3f}): ours / faiss = {row['ours_over_faiss']:.2f}"
            )
        print(
            f"{'':>15}chroma_unfiltered by ef_search: "
            + ", ".join(
                f"{row['ef_search']}: {row['p50_ms']:.2f} ms R {row['recall@10']:.3f}" for row in result["chroma_ef_curve"]
            )
        )
        for target, row in result["equal_recall_vs_chroma"].items():
            if row["speed_up"] is None:
                print(f"{'':>15}recall@10 >= {target}: cached search vs Chroma not both reached")
                continue
            ours, chroma = row["cluster_search_cached"], row["chroma_unfiltered"]
            print(
                f"{'':>15}equal recall@10 >= {target}: chroma ef {chroma['ef_search']} {chroma['p50_ms']:.3f} ms (R {chroma['recall@10']:.3f}), "
                f"cached search n_probe {ours['n_probe']} {ours['p50_ms']:.3f} ms (R {ours['recall@10']:.3f}): speed-up {row['speed_up']:.2f}x"
            )
        print(
            f"{'':>15}cluster_retriever scans {result['modes']['cluster_retriever']['fraction_scanned']:.1%} of the corpus per query; "
            f"build s: "
            + ", ".join(f"{k} {v:.1f}" for k, v in result["build_s"].items())
            + "; memory MB: "
            + ", ".join(f"{k} {v:.0f}" for k, v in result["memory_mb"].items())
        )
    write_json(args.json, results)


if __name__ == "__main__":
    main()
