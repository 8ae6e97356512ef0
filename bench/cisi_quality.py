"""Quality guard: flat vs routed vs strict on a BEIR folder with human judgments.

    python bench/cisi_quality.py [--dataset ../shared/datasets/cisi]

Builds an index with the default model, then reports nDCG@10, recall@100 and the mean
fraction of the corpus scanned per query for each mode, with routed as a ratio of flat.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from cluster_retriever import ClusterIndex, ClusterRetriever
from cluster_retriever.datasets import load_beir
from cluster_retriever.evaluation.metrics import ir_metrics
from _report import write_json

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
    parser.add_argument("--json", type=Path, default=Path("runs/cisi_quality.json"))
    args = parser.parse_args()
    data = load_beir(args.dataset)
    n_clusters = args.n_clusters if args.n_clusters == "auto" else int(args.n_clusters)
    with tempfile.TemporaryDirectory() as tmp:
        index = ClusterIndex.build(data.corpus, path=tmp, n_clusters=n_clusters)
        rows = {
            "flat": evaluate_mode(index, data.judged_queries, data.qrels, mode="flat"),
            "routed (default)": evaluate_mode(index, data.judged_queries, data.qrels),
            "strict": evaluate_mode(index, data.judged_queries, data.qrels, mode="strict"),
        }
    flat = rows["flat"]
    print(f"{data.name}: {len(data.corpus)} documents, {len(data.judged_queries)} judged queries, k={index.n_clusters}")
    print(f"{'mode':<18}{'nDCG@10':>9}{'x flat':>8}{'R@100':>8}{'x flat':>8}{'scanned':>9}")
    for mode, row in rows.items():
        print(
            f"{mode:<18}{row['ndcg@10']:>9.4f}{row['ndcg@10'] / flat['ndcg@10']:>8.3f}"
            f"{row['recall@100']:>8.4f}{row['recall@100'] / flat['recall@100']:>8.3f}{row['fraction_scanned']:>9.3f}"
        )
    write_json(args.json, {"dataset": data.name, "n_clusters": index.n_clusters, "modes": rows})


if __name__ == "__main__":
    main()
