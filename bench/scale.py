"""The scale table: the default path at 100k, 300k (and 1M) vectors against Chroma's own
query and FAISS IVF-Flat at equal recall, with the time and memory it takes to open.

    python bench/scale.py [--sizes 100000,300000] [--queries 200]

Vectors as in bench/routing_latency.py (mixes of neighbouring real all-MiniLM-L6-v2 CISI
embeddings plus noise; query embedding excluded). For each size, in one run: an app's
ChromaVectorStore collection is filled, adopted by a ClusterIndex (defaults: auto k, balanced
clusters, calibrated routing at target_recall 0.95), and then, in a fresh process,
``ClusterIndex.open`` is timed and its resident memory measured (RSS after loading the model,
after open, after the queries): cold (no lists file), warm (the file memory-mapped), warm with
float16 lists, each followed by the p50 of the same queries on the opened index (the path
users take: lists from the file); and, in another fresh process, what Chroma's embedded
client alone takes on its first read of the collection (it loads the collection's whole HNSW
index). Reported: recall@10 against exact search and p50 of the default path (documents
fetched from Chroma) against Chroma's default query on the same collection;
and ids-only search (route + scan, what FAISS returns) against FAISS IVF-Flat with as many
lists, at the fastest nprobe reaching the same recall. Writes runs/scale.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import faiss
import numpy as np
from _report import grown, resident_mb, write_json
from _vectors import CISI, NOISE, PROBES, fill, recall_at_10, sample_between, timed

from cluster_retriever import ClusterIndex
from cluster_retriever.calibration import budget_factor
from cluster_retriever.datasets import load_beir
from cluster_retriever.embeddings import embed_texts, resolve_embed_model
from cluster_retriever.routing import route
from cluster_retriever.store.clients import make_client
from cluster_retriever.types import DEFAULT_TARGET_RECALL, SearchParams


def in_fresh_process(*arguments: str) -> dict:
    """This script run again with ``arguments``, in a process where nothing else was loaded
    (this one's arrays would blur time and memory); its last line of output, as JSON."""
    shown = subprocess.run([sys.executable, __file__, *arguments], capture_output=True, text=True, check=True)
    return json.loads(shown.stdout.strip().splitlines()[-1])


def open_in_fresh_process(path: str, queries: np.ndarray, lists_dtype: str = "float32") -> dict:
    """Open time, RSS and query p50 of an index opened in a fresh process."""
    with tempfile.NamedTemporaryFile(suffix=".npy", delete=False) as f:
        np.save(f, queries)
    try:
        return in_fresh_process("--open-probe", path, "--queries-file", f.name, "--lists-dtype", lists_dtype)
    finally:
        Path(f.name).unlink()


def open_probe(path: str, queries_file: str, lists_dtype: str) -> None:
    embed_model = resolve_embed_model()
    before = resident_mb()
    started = time.perf_counter()
    index = ClusterIndex.open("bench", path=path, embed_model=embed_model, lists_dtype=lists_dtype)
    open_s = time.perf_counter() - started
    after_open = resident_mb()
    queries = np.load(queries_file)
    for q in queries:
        index.search(q, top_k=10)
    after_queries = resident_mb()
    # The path users take (an opened index, lists from the file), timed once its pages are in.
    _, default_ms = timed(lambda q: index.search(q, top_k=10), queries)
    _, ids_only_ms = timed(lambda q: index.search(q, top_k=10, with_nodes=False), queries)
    mb = 1 / 2**20
    print(
        json.dumps(
            {
                "open_s": open_s,
                "rss_open_mb": grown(before, after_open),
                "rss_after_queries_mb": grown(before, after_queries),
                "vectors_mb": index.lists.vectors.nbytes * mb,
                "p50_ms": float(np.percentile(default_ms, 50)),
                "p50_ids_only_ms": float(np.percentile(ids_only_ms, 50)),
            }
        )
    )


def chroma_read_probe(path: str) -> None:
    """What Chroma's embedded client itself takes on the first read of the collection (any
    read: get by ids, count, where): it loads the collection's whole HNSW index."""
    client = make_client(path)
    before = resident_mb()
    started = time.perf_counter()
    client.get_collection("source").get(ids=["doc0"], include=["documents"])
    print(json.dumps({"read_s": time.perf_counter() - started, "rss_mb": grown(before, resident_mb())}))


def open_costs(path: str, queries: np.ndarray) -> dict:
    """Cold (no lists file: every vector read through Chroma, then the file written), warm
    (the file mapped), and warm with float16 lists (after their own cold open)."""
    shutil.rmtree(Path(path) / "cluster_retriever_lists", ignore_errors=True)
    costs = {"cold": open_in_fresh_process(path, queries), "warm": open_in_fresh_process(path, queries)}
    costs["chroma_first_read"] = in_fresh_process("--chroma-probe", path)
    open_in_fresh_process(path, queries, "float16")
    costs["warm_float16"] = open_in_fresh_process(path, queries, "float16")
    return costs


def float16_recall(path: str, queries: np.ndarray, exact: list[list[str]], embed_model) -> float:
    index = ClusterIndex.open("bench", path=path, embed_model=embed_model, lists_dtype="float16")
    found = [index.search(q, top_k=10, with_nodes=False).ids for q in queries]
    index.close()
    return recall_at_10(found, exact)


def summary(row: dict) -> str:
    faiss_row = row["faiss_at_equal_recall"]
    faiss_text = (
        f"faiss nprobe {faiss_row['nprobe']} {faiss_row['p50_ms']:.2f} ms (R {faiss_row['recall@10']:.3f}), "
        f"ours / faiss {row['ids_only']['p50_ms'] / faiss_row['p50_ms']:.2f}x, with the faiss kernel "
        f"{row['ids_only_faiss_kernel']['p50_ms']:.2f} ms ({row['ids_only_faiss_kernel']['p50_ms'] / faiss_row['p50_ms']:.2f}x)"
        if faiss_row
        else "faiss does not reach it within 1024 probes"
    )
    opens = "; ".join(
        f"open {kind} {o['open_s']:.1f} s, RSS anon/file +{o['rss_open_mb']['anon']:.0f}/{o['rss_open_mb']['file']:.0f} MB "
        f"(+{o['rss_after_queries_mb']['anon']:.0f}/{o['rss_after_queries_mb']['file']:.0f} after queries), "
        f"then p50 {o['p50_ms']:.2f} ms (ids only {o['p50_ids_only_ms']:.2f})"
        for kind, o in row["open"].items()
        if isinstance(o, dict) and "open_s" in o
    )
    if chroma_read := row["open"].get("chroma_first_read"):
        opens += f"; of which Chroma's first read +{chroma_read['rss_mb']['anon']:.0f} MB anon ({chroma_read['read_s']:.1f} s)"
    default, chroma, ids_only = row["default"], row["chroma_default"], row["ids_only"]
    return (
        f"{row['n_docs']:>8} k {row['n_clusters']} (largest {row['largest_over_mean']:.1f}x mean): default R@10 "
        f"{default['recall@10']:.3f} p50 {default['p50_ms']:.2f} ms, scanned {default['fraction_scanned']:.1%}; chroma R@10 "
        f"{chroma['recall@10']:.3f} p50 {chroma['p50_ms']:.2f} ms ({chroma['p50_ms'] / default['p50_ms']:.2f}x; with the faiss kernel "
        f"{row['default_faiss_kernel']['p50_ms']:.2f} ms, {chroma['p50_ms'] / row['default_faiss_kernel']['p50_ms']:.2f}x); ids only R@10 "
        f"{ids_only['recall@10']:.3f} p50 {ids_only['p50_ms']:.2f} ms, {faiss_text}; {opens}; vectors "
        f"{row['open']['warm']['vectors_mb']:.0f} MB; float16 R@10 {row['open']['float16_recall@10']:.3f}; build s "
        + ", ".join(f"{k} {v:.0f}" for k, v in row["build_s"].items())
    )


def phase(n: int, text: str) -> None:
    """Progress on stderr: the large sizes run for the better part of an hour."""
    print(f"[{time.strftime('%H:%M:%S')}] {n}: {text}", file=sys.stderr, flush=True)


def bench_size(n: int, anchors: np.ndarray, n_queries: int, rng: np.random.Generator, embed_model) -> dict:
    phase(n, "sampling vectors, exact top-10")
    vectors = sample_between(anchors, n, NOISE, rng)
    queries = sample_between(anchors, n_queries, NOISE, rng)
    ids = np.asarray([f"doc{i}" for i in range(n)], dtype=object)
    exact = [ids[np.argpartition(-(vectors @ q), 10)[:10]].tolist() for q in queries]
    with tempfile.TemporaryDirectory() as tmp:
        client = make_client(tmp)
        source = client.get_or_create_collection("source", embedding_function=None, configuration={"hnsw": {"space": "cosine"}})
        phase(n, "filling the Chroma collection")
        started = time.perf_counter()
        fill(source, ids.tolist(), vectors, client.get_max_batch_size())
        chroma_build_s = time.perf_counter() - started
        phase(n, "adopting it (ClusterIndex.from_vector_store)")
        started = time.perf_counter()
        index = ClusterIndex.from_vector_store(source, client=client, embed_model=embed_model, name="bench", show_progress=False)
        build_s = time.perf_counter() - started

        def chroma(q):
            return source.query(query_embeddings=[q], n_results=10, include=["documents", "metadatas", "distances"])["ids"][0]

        def default_path(q):
            return [h.node.node_id for h in index.search(q, top_k=10).hits]

        phase(n, "timing queries")
        stats = [index.search(q, top_k=10).stats for q in queries]
        chroma(queries[0]), default_path(queries[0])
        chroma_found, chroma_ms = timed(chroma, queries)
        ours_found, ours_ms = timed(default_path, queries)
        ours_recall = recall_at_10(ours_found, exact)

        # ids only: our route + scan at the defaults against FAISS IVF-Flat at the same recall
        lists = index.lists
        factor = budget_factor(index.manifest.calibration, 10, DEFAULT_TARGET_RECALL)

        def ids_only(q):  # what the default path scans, without fetching documents
            return lists.scan(q, route(lists.centroids @ q, lists.sizes, min_docs=10, budget_factor=factor), 10).ids

        scan_found, scan_ms = timed(ids_only, queries)

        def ids_only_faiss_kernel(q):
            return lists.scan(
                q, route(lists.centroids @ q, lists.sizes, min_docs=10, budget_factor=factor), 10, kernel="faiss"
            ).ids

        ids_only_faiss_kernel(queries[0])  # FAISS's copy of the lists is made on the first call
        kernel_found, kernel_ms = timed(ids_only_faiss_kernel, queries)
        faiss_kernel = SearchParams(scan_kernel="faiss")

        def faiss_default_path(q):
            return [h.node.node_id for h in index.search(q, 10, faiss_kernel).hits]

        faiss_default_path(queries[0])
        faiss_default_found, faiss_default_ms = timed(faiss_default_path, queries)
        phase(n, "FAISS IVF-Flat")
        started = time.perf_counter()
        ivf = faiss.IndexIVFFlat(faiss.IndexFlatIP(lists.dim), lists.dim, index.n_clusters, faiss.METRIC_INNER_PRODUCT)
        ivf.train(vectors)
        ivf.add(vectors)
        faiss_build_s = time.perf_counter() - started
        faiss.omp_set_num_threads(1)
        curve = []
        for n_probe in (*PROBES, 384, 512, 768, 1024):
            ivf.nprobe = n_probe
            found, ms = timed(lambda q: ids[ivf.search(q[None, :], 10)[1][0]].tolist(), queries)
            curve.append({"nprobe": n_probe, "p50_ms": float(np.percentile(ms, 50)), "recall@10": recall_at_10(found, exact)})
        faiss_equal = next((row for row in curve if row["recall@10"] >= recall_at_10(scan_found, exact)), None)
        index.close()
        phase(n, "opening in fresh processes")
        opened = open_costs(tmp, queries)
        opened["float16_recall@10"] = float16_recall(tmp, queries, exact, embed_model)
    return {
        "n_docs": n,
        "n_clusters": index.n_clusters,
        "largest_over_mean": float(index.cluster_sizes.max() / index.cluster_sizes.mean()),
        "build_s": {"chroma_collection": chroma_build_s, "cluster_index_adopt": build_s, "faiss_ivf": faiss_build_s},
        "default": {
            "recall@10": ours_recall,
            "p50_ms": float(np.percentile(ours_ms, 50)),
            "fraction_scanned": float(np.mean([s.fraction_scanned for s in stats])),
        },
        "chroma_default": {"recall@10": recall_at_10(chroma_found, exact), "p50_ms": float(np.percentile(chroma_ms, 50))},
        "ids_only": {"recall@10": recall_at_10(scan_found, exact), "p50_ms": float(np.percentile(scan_ms, 50))},
        "ids_only_faiss_kernel": {"recall@10": recall_at_10(kernel_found, exact), "p50_ms": float(np.percentile(kernel_ms, 50))},
        "default_faiss_kernel": {
            "recall@10": recall_at_10(faiss_default_found, exact),
            "p50_ms": float(np.percentile(faiss_default_ms, 50)),
        },
        "faiss_curve": curve,
        "faiss_at_equal_recall": faiss_equal,
        "open": opened,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="100000,300000")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--dataset", type=Path, default=CISI)
    parser.add_argument("--json", type=Path, default=Path("runs/scale.json"))
    parser.add_argument("--open-probe", help=argparse.SUPPRESS)
    parser.add_argument("--queries-file", help=argparse.SUPPRESS)
    parser.add_argument("--lists-dtype", default="float32", help=argparse.SUPPRESS)
    parser.add_argument("--chroma-probe", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.chroma_probe:
        chroma_read_probe(args.chroma_probe)
        return
    if args.open_probe:
        open_probe(args.open_probe, args.queries_file, args.lists_dtype)
        return
    embed_model = resolve_embed_model()
    data = load_beir(args.dataset)
    anchors = embed_texts(embed_model, [d.get_content(metadata_mode="embed") for d in data.corpus], show_progress=True)
    rng = np.random.default_rng(0)
    results = []
    for n in args.sizes.split(","):
        results.append(bench_size(int(n), anchors, args.queries, rng, embed_model))
        write_json(args.json, results)  # each size as it finishes: the large ones take long
        print(summary(results[-1]), flush=True)


if __name__ == "__main__":
    main()
