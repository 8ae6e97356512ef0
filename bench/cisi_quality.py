"""Quality guard: flat vs routed vs strict on a BEIR folder with human judgments.

    python bench/cisi_quality.py [--dataset ../shared/datasets/cisi]

Builds an index with the default model, then reports nDCG@10, recall@100 and the mean
fraction of the corpus scanned per query for each mode, with routed as a ratio of flat.
``--seeds 8`` re-clusters with KMeans seeds 1-7 as well: how much the figures owe to one partition.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from _report import print_table, write_json

from cluster_retriever import ClusterIndex, ClusterRetriever
from cluster_retriever.datasets import load_beir
from cluster_retriever.evaluation.metrics import ir_metrics

DEFAULT_DATASET = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "cisi"


def evaluate_mode(index: ClusterIndex, queries: dict[str, str], qrels, **retriever_args) -> dict[str, float]:
    retriever = ClusterRetriever(index, similarity_top_k=100, **retriever_args)
    run, fractions = {}, []
    for qid, text in queries.items():
        run[qid] = {hit.node.node_id: hit.score for hit in retriever.retrieve(text)}
        fractions.append(retriever.last_stats.fraction_scanned)
    return {**ir_metrics(qrels, run, ["ndcg@10", "recall@100"]), "fraction_scanned": sum(fractions) / len(fractions)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", type=Path, default=DEFAULT_DATASET)
    parser.add_argument("--n-clusters", default="auto")
    parser.add_argument(
        "--seeds", type=int, default=1, help="also re-cluster with KMeans seeds 1..N-1 and report the routed spread"
    )
    parser.add_argument("--json", type=Path, default=Path("runs/cisi_quality.json"))
    args = parser.parse_args()
    data = load_beir(args.dataset)
    n_clusters = args.n_clusters if args.n_clusters == "auto" else int(args.n_clusters)
    queries, qrels = data.judged_queries, data.qrels
    with tempfile.TemporaryDirectory() as tmp:
        index = ClusterIndex.build(data.corpus, path=tmp, n_clusters=n_clusters)
        rows = {
            "flat": evaluate_mode(index, queries, qrels, mode="flat"),
            "routed (default)": evaluate_mode(index, queries, qrels),
            "strict": evaluate_mode(index, queries, qrels, mode="strict"),
        }
        by_seed = {0: rows["routed (default)"]}
        for seed in range(1, args.seeds):
            index.recluster(n_clusters=n_clusters, random_state=seed)
            by_seed[seed] = evaluate_mode(index, queries, qrels)
    flat = rows["flat"]

    def cells(label, row):
        return [
            label,
            f"{row['ndcg@10']:.4f}",
            f"{row['ndcg@10'] / flat['ndcg@10']:.3f}",
            f"{row['recall@100']:.4f}",
            f"{row['recall@100'] / flat['recall@100']:.3f}",
            f"{row['fraction_scanned']:.3f}",
        ]

    headers = ["mode", "nDCG@10", "x flat", "R@100", "x flat", "scanned"]
    title = f"{data.name}: {len(data.corpus)} documents, {len(queries)} judged queries, k={index.n_clusters}"
    print_table(title, headers, [cells(mode, row) for mode, row in rows.items()])
    if args.seeds > 1:
        print_table(
            "routed (default) by KMeans seed", ["seed", *headers[1:]], [cells(str(seed), row) for seed, row in by_seed.items()]
        )
        ratios = [row["recall@100"] / flat["recall@100"] for row in by_seed.values()]
        print(f"R@100 x flat over {len(ratios)} seeds: mean {sum(ratios) / len(ratios):.3f}, min {min(ratios):.3f}")
    write_json(args.json, {"dataset": data.name, "n_clusters": index.n_clusters, "modes": rows, "routed_by_seed": by_seed})


if __name__ == "__main__":
    main()
