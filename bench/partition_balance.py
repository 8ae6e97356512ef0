"""Balanced partitions: recall@10 against exact search and the fraction scanned, before and
after splitting oversized clusters, at the calibrated default (target recall 0.95).

    python bench/partition_balance.py [--sizes 100000] [--queries 300]

Vectors are synthetic on the manifold of real all-MiniLM-L6-v2 CISI embeddings (as in
routing_latency.py); queries come from the same distribution. Writes runs/partition_balance.json.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from _report import print_table, write_json
from _vectors import CISI, NOISE, sample_between

from cluster_retriever.calibration import budget_factor, calibrate, calibrated_route
from cluster_retriever.clustering import fit_clusters
from cluster_retriever.datasets import load_beir
from cluster_retriever.embeddings import embed_texts, resolve_embed_model
from cluster_retriever.scan.lists import InvertedLists


def measure(vectors: np.ndarray, queries: np.ndarray, max_ratio: float | None) -> dict[str, float]:
    clustering = fit_clusters(vectors, "auto", 0, max_ratio=max_ratio)
    lists = InvertedLists(clustering.centroids, [str(i) for i in range(len(vectors))], vectors, clustering.labels)
    calibration = calibrate(lists)
    recalls, scanned = [], []
    for q in queries:
        exact = set(np.argsort(-(vectors @ q))[:10].astype(str))
        clusters = calibrated_route(lists, calibration, q, 10, 0.95)
        found = lists.scan(q, clusters, 10)
        recalls.append(len(exact & set(found.ids)) / 10)
        scanned.append(found.n_scanned / len(vectors))
    return {
        "clusters": float(lists.n_clusters),
        "largest_over_mean": float(lists.sizes.max() / lists.sizes.mean()),
        "recall@10": float(np.mean(recalls)),
        "scanned": float(np.mean(scanned)),
        "budget_factor": float(
            budget_factor(calibration, 10, 0.95, float(np.median(np.max(queries @ lists.centroids.T, 1)))) or 0
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="100000")
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--out", type=Path, default=Path("runs/partition_balance.json"))
    args = parser.parse_args()
    data = load_beir(CISI)
    anchors = embed_texts(resolve_embed_model(), [d.get_content(metadata_mode="embed") for d in data.corpus])
    results, rows = {}, []
    for n in (int(size) for size in args.sizes.split(",")):
        rng = np.random.default_rng(0)
        vectors, queries = sample_between(anchors, n, NOISE, rng), sample_between(anchors, args.queries, NOISE, rng)
        for label, ratio in (("MiniBatchKMeans as fitted", None), ("oversized clusters split (> 4x mean)", 4.0)):
            row = measure(vectors, queries, ratio)
            results[f"{n} {label}"] = row
            rows.append(
                [
                    f"{n:,}",
                    label,
                    f"{row['clusters']:.0f}",
                    f"{row['largest_over_mean']:.1f}",
                    f"{row['recall@10']:.3f}",
                    f"{row['scanned']:.1%}",
                ]
            )
    print_table(
        "Balanced partitions at the calibrated default (target 0.95)",
        ["docs", "clustering", "k", "largest / mean", "R@10", "scanned"],
        rows,
    )
    write_json(args.out, results)


if __name__ == "__main__":
    main()
