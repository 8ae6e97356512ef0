"""The scan kernels side by side, ids only, on the same lists and the same probed clusters.

    python bench/scan_kernels.py [--sizes 100000,300000] [--refine N]

Vectors as in bench/scale.py (mixes of neighbouring real all-MiniLM-L6-v2 CISI embeddings
plus noise), clustered at the defaults; queries: CISI's real queries. Each query is routed
once at the defaults (calibrated for target_recall 0.95, k=10), and every kernel scans those
same clusters: ``numpy`` (float32 rows), ``faiss`` (IVF-Flat), ``sq8`` and ``pq4`` (codes, then
exact refinement of ``refine x 10`` candidates; ``refine`` chosen per lists version unless given). Reported per kernel: p50 and p95 of the scan,
recall@10 against exact search over the whole corpus and against the numpy scan of the same
clusters (what compression loses), the bytes a scan holds resident per vector, and the build
time (once per lists version). Writes runs/scan_kernels.json.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import faiss
import numpy as np
from _report import print_table, write_json
from _vectors import CISI, NOISE, recall_at_10, sample_between, timed

from cluster_retriever.calibration import calibrate, calibrated_route
from cluster_retriever.clustering import fit_clusters
from cluster_retriever.datasets import load_beir
from cluster_retriever.embeddings import embed_texts, resolve_embed_model
from cluster_retriever.scan.kernels import RefinedKernel
from cluster_retriever.scan.lists import InvertedLists
from cluster_retriever.types import DEFAULT_TARGET_RECALL

KERNELS = ("numpy", "faiss", "sq8", "pq4")


def resident_bytes(kernel: object, dim: int) -> float:
    """Bytes per vector a kernel holds in memory for scanning (float rows stay in the file)."""
    ivf = getattr(kernel, "_ivf", None)
    if ivf is None:
        return float(4 * dim)  # numpy scans the float rows themselves (memory-mapped from the lists file)
    if isinstance(kernel, RefinedKernel) and isinstance(ivf, faiss.IndexIVFPQFastScan):
        return ivf.M2 / 2 + 8  # 4-bit codes, packed, plus the row id
    return float(ivf.code_size + 8)


def bench_size(n: int, anchors: np.ndarray, queries: np.ndarray, refine: int | None, rng: np.random.Generator) -> dict:
    vectors = sample_between(anchors, n, NOISE, rng)
    started = time.perf_counter()
    clustering = fit_clusters(vectors, "auto", 0)
    lists = InvertedLists(clustering.centroids, [f"d{i}" for i in range(n)], vectors, clustering.labels)
    fit_s = time.perf_counter() - started
    calibration = calibrate(lists)
    probes = [calibrated_route(lists, calibration, q, 10, DEFAULT_TARGET_RECALL) for q in queries]
    exact = [[f"d{i}" for i in np.argsort(-(vectors @ q))[:10]] for q in queries]
    scanned = float(np.mean([lists.sizes[p].sum() for p in probes])) / n
    rows, baseline = [], None
    for name in KERNELS:
        started = time.perf_counter()
        kernel = RefinedKernel(lists.layout, name, refine) if name in RefinedKernel.REFINE else lists.kernel(name)
        build_s = time.perf_counter() - started
        pairs = list(zip(queries, probes, strict=True))
        found, ms = timed(lambda pair, kernel=kernel: kernel.scan(pair[0], lists.nonempty(pair[1]), 10).ids, pairs)
        baseline = baseline if baseline is not None else found
        rows.append(
            {
                "kernel": name,
                "p50_ms": float(np.percentile(ms, 50)),
                "p95_ms": float(np.percentile(ms, 95)),
                "recall@10_vs_exact": recall_at_10(found, exact),
                "recall@10_vs_numpy": recall_at_10(found, baseline),
                "resident_bytes_per_vector": resident_bytes(kernel, lists.dim),
                "float32_bytes_per_vector": 4 * lists.dim,
                "build_s": build_s,
                "refine": getattr(kernel, "refine", None),
            }
        )
    return {"n": n, "k": lists.n_clusters, "fit_s": fit_s, "fraction_scanned": scanned, "refine": refine, "kernels": rows}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="100000")
    parser.add_argument("--refine", type=int, default=None, help="candidates refined per result (default: per codec)")
    parser.add_argument("--out", type=Path, default=Path("runs/scan_kernels.json"))
    args = parser.parse_args()
    faiss.omp_set_num_threads(1)  # one query at a time, as an app asks: no thread start-up per scan
    data = load_beir(CISI)
    embed_model = resolve_embed_model()
    anchors = embed_texts(embed_model, [d.get_content() for d in data.corpus])
    queries = embed_texts(embed_model, list(data.judged_queries.values()))
    rng = np.random.default_rng(0)
    results = [bench_size(int(n), anchors, queries, args.refine, rng) for n in args.sizes.split(",")]
    for result in results:
        base = result["kernels"][0]["p50_ms"]
        print_table(
            f"{result['n']:,} vectors, k={result['k']:,}, {result['fraction_scanned']:.1%} scanned",
            [
                "kernel",
                "refine",
                "p50 ms",
                "vs numpy",
                "p95 ms",
                "R@10 vs exact",
                "R@10 vs numpy",
                "resident B/vector",
                "build s",
            ],
            [
                [
                    r["kernel"],
                    r["refine"] or "-",
                    f"{r['p50_ms']:.2f}",
                    f"{base / r['p50_ms']:.2f}x",
                    f"{r['p95_ms']:.2f}",
                    f"{r['recall@10_vs_exact']:.3f}",
                    f"{r['recall@10_vs_numpy']:.3f}",
                    f"{r['resident_bytes_per_vector']:.0f} of {r['float32_bytes_per_vector']}",
                    f"{r['build_s']:.1f}",
                ]
                for r in result["kernels"]
            ],
        )
    write_json(args.out, results)


if __name__ == "__main__":
    main()
