"""Results a person reads at a glance: a console table, results.json, report.md and PNG plots."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure  # the object API: no pyplot, no global backend switch
from rich.console import Console
from rich.table import Table
from sklearn.decomposition import PCA

from cluster_retriever.evaluation.runner import ModelRun

COLUMNS = [
    ("nDCG@10", "metrics", "ndcg@10", "{:.3f}"),
    ("R@10", "metrics", "recall@10", "{:.3f}"),
    ("R@100", "metrics", "recall@100", "{:.3f}"),
    ("MRR@10", "metrics", "mrr@10", "{:.3f}"),
    ("ctxP(id)", "metrics", "ragas_id_context_precision@10", "{:.3f}"),
    ("ctxR(id)", "metrics", "ragas_id_context_recall@10", "{:.3f}"),
    ("scanned", "cost", "fraction_scanned", "{:.1%}"),
    ("p50 ms", "cost", "query_ms_p50", "{:.2f}"),
    ("p95 ms", "cost", "query_ms_p95", "{:.2f}"),
    ("LLM calls/q", "cost", "llm_calls_per_query", "{:.0f}"),
]
LLM_COLUMNS = [
    ("faithful", "faithfulness"),
    ("relevancy", "answer_relevancy"),
    ("ctxP(llm)", "llm_context_precision_with_reference"),
    ("ctxR(llm)", "context_recall"),
]


def _fmt(value: Any, pattern: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return pattern.format(value)


def to_json(dataset: str, n_queries: int, results: list[ModelRun]) -> dict[str, Any]:
    runs = []
    for result in results:
        if result.error:
            runs.append({"model": result.model, "error": result.error})
        for run in result.runs:
            runs.append({"model": result.model, **run})
    clusters = {r.model: {k: v for k, v in r.clusters.items() if k != "projection"} for r in results if not r.error}
    return {"dataset": dataset, "queries": n_queries, "runs": runs, "clusters": clusters}


def rows(results: list[ModelRun]) -> tuple[list[str], list[list[str]]]:
    with_llm = any("faithfulness" in run["metrics"] for r in results for run in r.runs)
    header = ["model", "mode"] + [c[0] for c in COLUMNS] + ([c[0] for c in LLM_COLUMNS] if with_llm else [])
    body = []
    for result in results:
        if result.error:
            body.append([result.model, "FAILED", result.error[:80]] + [""] * (len(header) - 3))
        for run in result.runs:
            cells = [result.model, run["mode"]] + [_fmt(run[group].get(key), pattern) for _, group, key, pattern in COLUMNS]
            if with_llm:
                cells += [_fmt(run["metrics"].get(key), "{:.3f}") for _, key in LLM_COLUMNS]
            body.append(cells)
    return header, body


def cluster_rows(results: list[ModelRun]) -> tuple[list[str], list[list[str]]]:
    header = ["model", "clusters", "silhouette", "purity", "build s"]
    body = [
        [
            r.model,
            str(r.clusters.get("n_clusters", "")),
            _fmt(r.clusters.get("silhouette"), "{:.3f}"),
            _fmt(r.clusters.get("purity"), "{:.3f}"),
            _fmt(r.clusters.get("build_s"), "{:.1f}"),
        ]
        for r in results
        if not r.error
    ]
    return header, body


def print_tables(dataset: str, n_queries: int, results: list[ModelRun], console: Console | None = None) -> None:
    console = console or Console(width=200)
    for title, (header, body) in (
        (f"{dataset}: retrieval ({n_queries} queries)", rows(results)),
        (f"{dataset}: clusters", cluster_rows(results)),
    ):
        table = Table(*header, title=title)
        for row in body:
            table.add_row(*row)
        console.print(table)


def _markdown(header: list[str], body: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell.replace("|", "/") for cell in row) + " |" for row in body]
    return "\n".join(lines)


def plot_ndcg(results: list[ModelRun], path: Path) -> None:
    models = [r.model for r in results if r.runs]
    modes = list(dict.fromkeys(run["mode"] for r in results for run in r.runs))
    fig = Figure(figsize=(max(6, 2.2 * len(models)), 4.2))
    ax = fig.subplots()
    width = 0.8 / max(len(modes), 1)
    for offset, mode in enumerate(modes):
        values = [next((run["metrics"]["ndcg@10"] for run in r.runs if run["mode"] == mode), 0.0) for r in results if r.runs]
        bars = ax.bar(np.arange(len(models)) + offset * width, values, width, label=mode)
        ax.bar_label(bars, fmt="%.3f", fontsize=7, padding=2)
    ax.set_xticks(np.arange(len(models)) + width * (len(modes) - 1) / 2, models, fontsize=8)
    ax.set_ylabel("nDCG@10")
    ax.set_title("nDCG@10 by embedding model and retrieval mode")
    ax.set_ylim(0, 1.08 * max([run["metrics"]["ndcg@10"] for r in results for run in r.runs] + [0.1]))
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def plot_clusters(result: ModelRun, path: Path) -> None:
    sample = result.clusters["projection"]
    pca = PCA(n_components=2, random_state=0).fit(sample["vectors"])
    points = pca.transform(sample["vectors"])
    query = pca.transform(sample["query"][None, :])[0]
    probed = np.isin(sample["clusters"], sample["probed"])
    fig = Figure(figsize=(7, 6))
    ax = fig.subplots()
    ax.scatter(points[~probed, 0], points[~probed, 1], s=6, c="lightgray", label="other clusters")
    ax.scatter(
        points[probed, 0],
        points[probed, 1],
        s=10,
        c=sample["clusters"][probed],
        cmap="tab20",
        label=f"probed clusters ({len(sample['probed'])})",
    )
    ax.scatter(query[0], query[1], marker="*", s=300, c="red", edgecolors="black", label="query")
    ax.set_title(f"{result.model}: PCA of documents, query {sample['query_text'][:45]!r}", fontsize=9)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def write_report(dataset: str, n_queries: int, results: list[ModelRun], out: Path, command: str) -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    files = {"json": out / "results.json", "report": out / "report.md", "ndcg": out / "ndcg_by_model_mode.png"}
    files["json"].write_text(json.dumps(to_json(dataset, n_queries, results), indent=2))
    plot_ndcg(results, files["ndcg"])
    plotted = next((r for r in results if not r.error and "projection" in r.clusters), None)
    if plotted is not None:
        files["clusters"] = out / "clusters.png"
        plot_clusters(plotted, files["clusters"])
    report = [
        f"# Retrieval evaluation: {dataset}",
        f"\n`{command}` ({n_queries} queries)\n",
        "## Retrieval\n",
        _markdown(*rows(results)),
        "\nscanned: mean fraction of the corpus scanned per query; p50/p95: retrieval latency, query embedding excluded.\n",
        "## Clusters\n",
        _markdown(*cluster_rows(results)),
        "\n![nDCG@10 by model and mode](ndcg_by_model_mode.png)\n",
    ]
    if "clusters" in files:
        report.append("![clusters and the probed clusters of one query](clusters.png)\n")
    files["report"].write_text("\n".join(report))
    return files
