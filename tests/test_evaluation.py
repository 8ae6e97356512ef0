"""The evaluation harness end to end on a small BEIR folder, and its metric helpers."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cluster_retriever.evaluation.metrics import cluster_quality, ir_metrics, ragas_id_metrics

from .conftest import ROLES

REPO = Path(__file__).resolve().parents[1]


def write_beir(folder: Path) -> Path:
    (folder / "qrels").mkdir(parents=True)
    corpus, queries, qrels = [], [], ["query-id\tcorpus-id\tscore"]
    for role, text in ROLES.items():
        for i in range(6):
            corpus.append({"_id": f"{role}-{i}", "title": f"{role} {i}", "text": f"{text} Variant {i}."})
    asks = {
        "pmm": "who owns go-to-market launches",
        "pm": "who prioritises the backlog",
        "de": "Spark ETL pipelines",
        "chef": "croissants and desserts",
    }
    for role, question in asks.items():
        queries.append({"_id": role, "text": question})
        qrels += [f"{role}\t{role}-{i}\t1" for i in range(6)]
    (folder / "corpus.jsonl").write_text("\n".join(json.dumps(r) for r in corpus))
    (folder / "queries.jsonl").write_text("\n".join(json.dumps(q) for q in queries))
    (folder / "qrels" / "test.tsv").write_text("\n".join(qrels) + "\n")
    return folder


def test_ir_metrics_match_hand_computed_values():
    qrels = {"q1": {"a": 1}, "q2": {"b": 1, "c": 1}}
    run = {"q1": {"x": 3.0, "a": 2.0}, "q2": {"b": 1.0}}
    scores = ir_metrics(qrels, run, ["mrr@10", "recall@10"])
    assert scores["mrr@10"] == pytest.approx((0.5 + 1.0) / 2)
    assert scores["recall@10"] == pytest.approx((1.0 + 0.5) / 2)
    assert ir_metrics(qrels, {}, ["recall@10"])["recall@10"] == 0.0  # missing queries score zero


def test_ragas_id_metrics():
    scores = ragas_id_metrics({"q": "text"}, {"q": {"a": 1, "b": 1}}, {"q": {"a": 2.0, "x": 1.0}}, top_k=2)
    assert scores == {"ragas_id_context_precision@2": pytest.approx(0.5), "ragas_id_context_recall@2": pytest.approx(0.5)}


def test_cluster_quality():
    vectors = np.array([[1, 0], [0.99, 0.1], [0, 1], [0.1, 0.99]], dtype=np.float32)
    quality = cluster_quality(vectors, np.array([0, 0, 1, 1]), ["x", "x", "y", "x"])
    assert quality["purity"] == 0.75 and quality["silhouette"] > 0.9


@pytest.mark.slow
def test_run_ragas_end_to_end(tmp_path):
    dataset = write_beir(tmp_path / "mini")
    out = tmp_path / "out"
    command = [
        sys.executable,
        str(REPO / "eval" / "run_ragas.py"),
        "--dataset",
        str(dataset),
        "--out",
        str(out),
        "--models",
        "all-MiniLM-L6-v2,tokenlearn-static-model-64d,no-such-model-xyz",
        "--max-queries",
        "3",
    ]
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    first = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=cwd)
    assert first.returncode == 0, first.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    assert results["dataset"] == "mini" and results["queries"] == 3
    runs = {(r["model"], r.get("mode")): r for r in results["runs"]}
    assert "error" in runs[("no-such-model-xyz", None)]  # reported, and the run went on
    for model in ("all-MiniLM-L6-v2", "tokenlearn-static-model-64d"):
        assert {mode for m, mode in runs if m == model} == {"flat", "routed", "strict", "hybrid"}
        for mode in ("flat", "routed", "strict", "hybrid"):
            run = runs[(model, mode)]
            assert 0 <= run["metrics"]["ndcg@10"] <= 1 and 0 < run["cost"]["fraction_scanned"] <= 1
            assert set(run["metrics"]) >= {"ndcg@10", "recall@10", "recall@100", "mrr@10", "ragas_id_context_recall@10"}
            # per-query scores and a bootstrap interval that holds the mean
            assert len(run["per_query"]["ndcg@10"]) == 3
            low, high = run["ci"]["ndcg@10"]
            assert low <= run["metrics"]["ndcg@10"] <= high
    # BM25 is a row of its own; every comparison carries a Holm-adjusted p-value
    assert runs[("bm25", "lexical")]["metrics"]["ndcg@10"] > 0
    comparisons = results["comparisons"]
    assert comparisons and all(c["p_holm"] >= c["p_value"] for c in comparisons)
    pairs = {(c["a"], c["b"]) for c in comparisons}
    assert ("all-MiniLM-L6-v2 routed", "all-MiniLM-L6-v2 flat") in pairs
    assert ("bm25 lexical", "all-MiniLM-L6-v2 flat") in pairs
    assert results["verdict"].startswith("On mini, ") and "nDCG@10" in results["verdict"]
    # the roles are easy to tell apart; metrics cover the 3 sampled queries only
    assert runs[("all-MiniLM-L6-v2", "flat")]["metrics"]["ndcg@10"] > 0.9
    assert runs[("all-MiniLM-L6-v2", "flat")]["cost"]["fraction_scanned"] == 1.0
    assert results["clusters"]["all-MiniLM-L6-v2"]["n_clusters"] >= 2
    report = (out / "report.md").read_text()
    assert "| all-MiniLM-L6-v2 | routed |" in report and "FAILED" in report
    assert "**Verdict.** On mini" in report and "[95% CI]" in report and "Pareto front" in report
    assert "## Where routed loses against exact search" in report
    for png in ("ndcg_by_model_mode.png", "clusters.png", "quality_vs_cost.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"
    assert "nDCG@10" in first.stdout
    assert "scans this corpus exactly with all-MiniLM-L6-v2" in report  # 12 documents: the defaults would not route
    assert list(cwd.iterdir()) == []  # everything under --out, the embedding cache included
    cached = sorted(p.name for p in (out / "cache" / "embeddings" / "mini").iterdir())
    assert cached == ["sentence-transformers_all-MiniLM-L6-v2.npz", "tokenlearn-static-model-64d.npz"]
    second = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=cwd)
    assert second.returncode == 0
    again = json.loads((out / "results.json").read_text())
    assert again["runs"][1]["metrics"] == results["runs"][1]["metrics"] and again["comparisons"] == comparisons


def test_help_explains_every_option():
    shown = subprocess.run(
        [sys.executable, str(REPO / "eval" / "run_ragas.py"), "--help"], capture_output=True, text=True, cwd=REPO
    )
    assert shown.returncode == 0
    for option in ("--dataset", "--models", "--modes", "--top-k", "--out", "--llm", "--api-base", "--max-queries"):
        assert option in shown.stdout
