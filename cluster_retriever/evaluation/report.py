"""Results a person reads at a glance: a console table, results.json, report.md and PNG plots."""

from __future__ import annotations

import json
import math
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure  # the object API: no pyplot, no global backend switch
from rich.console import Console
from rich.table import Table
from sklearn.decomposition import PCA

from cluster_retriever.evaluation.analysis import pareto_front, verdict
from cluster_retriever.evaluation.runner import ModelRun
from cluster_retriever.evaluation.statistics import Comparison

COLUMNS = [
    ("R@10", "metrics", "recall@10", "{:.3f}"),
    ("MRR@10", "metrics", "mrr@10", "{:.3f}"),
    ("ctxP(id)", "metrics", "ragas_id_context_precision@10", "{:.3f}"),
    ("ctxR(id)", "metrics", "ragas_id_context_recall@10", "{:.3f}"),
    ("scanned", "cost", "fraction_scanned", "{:.1%}"),
    ("p50 ms", "cost", "query_ms_p50", "{:.2f}"),
    ("p95 ms", "cost", "query_ms_p95", "{:.2f}"),
    ("LLM calls/q", "cost", "llm_calls_per_query", "{:.0f}"),
    ("tokens/q", "cost", "llm_tokens_per_query", "{:.0f}"),
    ("$/q", "cost", "llm_cost_usd_per_query", "{:.5f}"),
    ("rerank s p50", "cost", "rerank_s_p50", "{:.1f}"),
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


def _llm_cell(run: dict[str, Any], metric: str) -> str:
    """The mean over the samples the LLM could score, and how many it could not."""
    if "llm" not in run:
        return ""
    failed = run["llm"]["failed"].get(metric, 0) + run["llm"]["answers_failed"]
    value = _fmt(run["metrics"].get(metric), "{:.3f}")
    return f"{value} ({failed}/{run['llm']['samples']} failed)" if failed else value


def _with_ci(run: dict[str, Any], metric: str, mark: str) -> str:
    low, high = run.get("ci", {}).get(metric, (math.nan, math.nan))
    return f"{run['metrics'][metric]:.3f}{mark} [{low:.3f}, {high:.3f}]"


def _marks(name: str, metric: str, family: list[Comparison]) -> str:
    """* : differs significantly from exact search (flat) of the same model;
    † : significantly below the best row of its mode."""
    mark = ""
    for c in family:
        if c.metric != metric or not c.significant or name not in (c.a, c.b):
            continue
        other = c.b if c.a == name else c.a
        if other.endswith(" flat") and other.split(" ")[0] == name.split(" ")[0]:
            mark += "*"
        elif other.split(" ")[-1] == name.split(" ")[-1] and c.better == other:
            mark += "†"
    return "".join(sorted(set(mark), reverse=True))


def rows(results: list[ModelRun], family: list[Comparison] | None = None) -> tuple[list[str], list[list[str]]]:
    family = family or []
    with_llm = any("llm" in run for r in results for run in r.runs)
    header = ["model", "mode", "nDCG@10 [95% CI]", "R@100 [95% CI]"] + [c[0] for c in COLUMNS]
    header += [c[0] for c in LLM_COLUMNS] if with_llm else []
    body = []
    for result in results:
        if result.error:
            body.append([result.model, "FAILED", result.error[:80]] + [""] * (len(header) - 3))
        for run in result.runs:
            name = f"{result.model} {run['mode']}"
            cells = [result.model, run["mode"]]
            cells += [_with_ci(run, metric, _marks(name, metric, family)) for metric in ("ndcg@10", "recall@100")]
            cells += [_fmt(run[group].get(key), pattern) for _, group, key, pattern in COLUMNS]
            if with_llm:
                cells += [_llm_cell(run, key) for _, key in LLM_COLUMNS]
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


def cost_rows(results: list[ModelRun], front: list[str]) -> tuple[list[str], list[list[str]]]:
    header = ["model", "docs/s (embedding)", "dimension", "index MB", "best nDCG@10", "Pareto front"]
    body = []
    for r in results:
        if r.error or not r.runs:
            continue
        best = max(run["metrics"]["ndcg@10"] for run in r.runs)
        body.append(
            [
                r.model,
                f"{r.cost.get('docs_per_s', 0):.0f}",
                f"{r.cost.get('dimension', 0):.0f}" if r.cost.get("dimension") else "sparse",
                f"{r.cost.get('index_mb', 0):.1f}",
                f"{best:.3f}",
                "yes" if r.model in front else "",
            ]
        )
    return header, body


def _quality_and_speed(results: list[ModelRun]) -> dict[str, tuple[float, float]]:
    return {
        r.model: (r.cost.get("docs_per_s", 0.0), max(run["metrics"]["ndcg@10"] for run in r.runs))
        for r in results
        if not r.error and r.runs and r.cost.get("docs_per_s")
    }


def print_tables(
    dataset: str,
    n_queries: int,
    results: list[ModelRun],
    family: list[Comparison] | None = None,
    console: Console | None = None,
) -> None:
    console = console or Console(width=220)
    front = pareto_front(_quality_and_speed(results))
    for title, (header, body) in (
        (f"{dataset}: retrieval ({n_queries} queries)", rows(results, family)),
        (f"{dataset}: cost", cost_rows(results, front)),
        (f"{dataset}: clusters", cluster_rows(results)),
    ):
        table = Table(*header, title=title)
        for row in body:
            table.add_row(*row)
        console.print(table)
    if family is not None:
        console.print(verdict(dataset, results, family))


def _markdown(header: list[str], body: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell.replace("|", "/") for cell in row) + " |" for row in body]
    return "\n".join(lines)


def plot_ndcg(results: list[ModelRun], path: Path) -> None:
    """Grouped bars, one group per model; a model that has no run of a mode gets no bar (not a 0)."""
    models = [r for r in results if r.runs]
    modes = list(dict.fromkeys(run["mode"] for r in models for run in r.runs))
    fig = Figure(figsize=(max(7, 2.4 * len(models)), 4.6))
    ax = fig.subplots()
    width = 0.8 / max(len(modes), 1)
    tops = [0.1]
    own = [[m for m in modes if any(run["mode"] == m for run in r.runs)] for r in models]  # each group centred on its bars
    for mode in modes:
        found = [(x, next((run for run in r.runs if run["mode"] == mode), None)) for x, r in enumerate(models)]
        present = [(x, run) for x, run in found if run is not None]
        values = np.array([run["metrics"]["ndcg@10"] for _, run in present])
        low = np.array([run.get("ci", {}).get("ndcg@10", [v, v])[0] for (_, run), v in zip(present, values, strict=True)])
        high = np.array([run.get("ci", {}).get("ndcg@10", [v, v])[1] for (_, run), v in zip(present, values, strict=True)])
        tops.append(float(high.max()))
        xs = np.array([x + (own[x].index(mode) - (len(own[x]) - 1) / 2) * width for x, _ in present])
        bars = ax.bar(xs, values, width, yerr=np.vstack([values - low, high - values]), capsize=2, label=mode)
        ax.bar_label(bars, fmt="%.3f", fontsize=7, padding=2)
    ax.set_xticks(np.arange(len(models)), [r.model for r in models], fontsize=8)
    ax.set_ylabel("nDCG@10")
    ax.set_title("nDCG@10 by model and mode\n(error bars: 95% bootstrap CI)", fontsize=10)
    ax.set_ylim(0, min(1.0, max(tops)) * 1.15)  # room for the error bars and their labels
    ax.legend(fontsize=8, ncols=min(len(modes), 4), loc="upper center", bbox_to_anchor=(0.5, -0.12))
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def plot_clusters(result: ModelRun, path: Path) -> None:
    """Left: the query among the clusters it probed and their nearest unprobed neighbours (a
    PCA of those documents only, so the picture is of the query's neighbourhood); right, when
    the dataset has labels: every sampled document by its label (a PCA of all of them)."""
    sample = result.clusters["projection"]
    vectors, clusters, query_vector = sample["vectors"], np.asarray(sample["clusters"]), sample["query"]
    probed_ids = [int(c) for c in sample["probed"]]
    present = np.unique(clusters)
    means = np.stack([vectors[clusters == c].mean(axis=0) for c in present])
    nearest = [int(c) for c in present[np.argsort(-(means @ query_vector))] if int(c) not in probed_ids]
    neighbours = nearest[: max(3, len(probed_ids))]
    local = np.isin(clusters, probed_ids + neighbours)
    pca = PCA(n_components=2, random_state=0).fit(np.vstack([vectors[local], query_vector]))
    points = pca.transform(vectors[local])
    query = pca.transform(query_vector[None, :])[0]
    probed = np.isin(clusters[local], probed_ids)
    labels = sample.get("labels")
    fig = Figure(figsize=(14, 6) if labels is not None else (7, 6))
    axes = fig.subplots(1, 2) if labels is not None else [fig.subplots()]
    if labels is not None:  # do the clusters follow the dataset's own categories?
        everything = PCA(n_components=2, random_state=0).fit_transform(vectors)
        for category in sorted(set(labels)):
            chosen = np.asarray(labels) == category
            axes[1].scatter(everything[chosen, 0], everything[chosen, 1], s=6, label=category)
        axes[1].set_title(
            f"all sampled documents by their label (cluster purity {result.clusters.get('purity', 0):.2f})", fontsize=9
        )
        axes[1].legend(fontsize=8, markerscale=2)
    ax = axes[0]
    ax.scatter(points[~probed, 0], points[~probed, 1], s=8, c="lightgray", label=f"nearest unprobed clusters ({len(neighbours)})")
    ax.scatter(
        points[probed, 0],
        points[probed, 1],
        s=12,
        c=clusters[local][probed],
        cmap="tab20",
        label=f"probed clusters ({len(probed_ids)})",
    )
    ax.scatter(query[0], query[1], marker="*", s=300, c="red", edgecolors="black", label="query")
    ax.set_title(f"{result.model}: query {sample['query_text'][:40]!r}\namong the clusters it probed", fontsize=9)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def plot_cost(results: list[ModelRun], path: Path) -> None:
    points = _quality_and_speed(results)
    front = pareto_front(points)
    fig = Figure(figsize=(7, 4.5))
    ax = fig.subplots()
    for name, (speed, quality) in points.items():
        ax.scatter(speed, quality, s=60, c="tab:red" if name in front else "tab:gray", zorder=3)
        ax.annotate(name, (speed, quality), fontsize=8, xytext=(5, 4), textcoords="offset points")
    if len(front) > 1:
        ax.plot([points[n][0] for n in front], [points[n][1] for n in front], c="tab:red", lw=1, ls="--", label="Pareto front")
        ax.legend(fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("embedding throughput, documents/s (log scale)")
    ax.set_ylabel("best nDCG@10 over modes")
    ax.set_title("quality against cost: red models are worth their cost", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def _drill_markdown(drill: dict[str, list[dict[str, Any]]]) -> list[str]:
    lines = ["## Where routed loses against exact search\n"]
    for model, cases in drill.items():
        if not cases:
            lines.append(f"{model}: routed never scores below flat on a query.\n")
            continue
        lines.append(f"**{model}** (five largest nDCG@10 drops; rank: where flat ranked each relevant document routed missed)\n")
        lines.append("| query | nDCG@10 drop | clusters probed | missed relevant: rank in flat |")
        lines.append("|---|---|---|---|")
        for case in cases:
            missed = (
                ", ".join(f"{doc} (#{rank})" for doc, rank in case["missed_relevant_flat_rank"].items()) or "none (order only)"
            )
            lines.append(
                f"| {case['query'][:70].replace('|', '/')} | {case['ndcg_drop']:.3f} | {case['clusters_probed']} | {missed} |"
            )
        lines.append("")
    return lines


def _exact_note(results: list[ModelRun]) -> str:
    exact = [r.model for r in results if r.clusters.get("exact_by_default")]
    if not exact:
        return "the library routes this corpus at its defaults too"
    return f"at its defaults the library scans this corpus exactly with {', '.join(exact)}: it is that small"


def _llm_note(results: list[ModelRun]) -> list[str]:
    runs = [(r.model, run) for r in results for run in r.runs if "llm" in run]
    if not runs:
        return []
    lines = [
        "LLM metrics (RAGAS, judged by the --llm model) are means over the answers the model could score; "
        "`(n/m failed)` counts answers it failed to give and outputs RAGAS could not use (malformed JSON, timeouts, "
        "nothing to judge), which are left out, never averaged in."
    ]
    for model, run in runs:
        failed = ", ".join(f"{name} {n}" for name, n in run["llm"]["failed"].items())
        lines.append(
            f"- {model} {run['mode']}: {run['llm']['samples']} queries, answers failed {run['llm']['answers_failed']}; unscored: {failed}"
        )
    return ["\n".join(lines) + "\n"]


def write_report(
    dataset: str,
    n_queries: int,
    results: list[ModelRun],
    out: Path,
    command: str,
    family: list[Comparison] | None = None,
    drill: dict[str, list[dict[str, Any]]] | None = None,
) -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    family = family or []
    files = {
        "json": out / "results.json",
        "report": out / "report.md",
        "ndcg": out / "ndcg_by_model_mode.png",
        "cost": out / "quality_vs_cost.png",
    }
    payload = to_json(dataset, n_queries, results)
    payload["comparisons"] = [{**asdict(c), "significant": c.significant} for c in family]
    payload["verdict"] = verdict(dataset, results, family)
    payload["drill_down"] = drill or {}
    files["json"].write_text(json.dumps(payload, indent=2))
    plot_ndcg(results, files["ndcg"])
    plot_cost(results, files["cost"])
    plotted = next((r for r in results if not r.error and "projection" in r.clusters), None)
    if plotted is not None:
        files["clusters"] = out / "clusters.png"
        plot_clusters(plotted, files["clusters"])
    front = pareto_front(_quality_and_speed(results))
    report = [
        f"# Retrieval evaluation: {dataset}",
        f"\n`{command}` ({n_queries} queries)\n",
        f"**Verdict.** {payload['verdict']}\n",
        "## Retrieval\n",
        _markdown(*rows(results, family)),
        "\n95% CI: bootstrap over queries (BCa, seeded). `*`: differs significantly from exact search (flat) of the "
        "same model; `†`: significantly below the best row of its mode (paired two-sided t-test over the same queries, "
        "Holm-adjusted over every comparison on this dataset, p < 0.05). routed: the calibrated routing itself, forced on "
        f"({_exact_note(results)}). hybrid: reciprocal rank fusion (k = 60) of BM25 and routed. bm25: "
        "bm25s defaults (k1 1.5, b 0.75), lower-cased word tokens, English stop words, no stemming. scanned: mean fraction "
        "of the corpus scanned per query; p50/p95: retrieval latency (ids and scores; documents are read only by routed+rerank), query embedding excluded.\n",
        *_llm_note(results),
        "## Cost\n",
        _markdown(*cost_rows(results, front)),
        "\ndocs/s: embedding throughput measured in this run on the first documents, about 2 s of batches of 8 (not the "
        "cache); index MB: the "
        "in-memory vectors and centroids.\n",
        "![quality against cost](quality_vs_cost.png)\n",
        "## Clusters\n",
        _markdown(*cluster_rows(results)),
        "\n![nDCG@10 by model and mode](ndcg_by_model_mode.png)\n",
    ]
    report += _drill_markdown(drill or {})
    if "clusters" in files:
        report.append("![clusters and the probed clusters of one query](clusters.png)\n")
    files["report"].write_text("\n".join(report))
    return files
