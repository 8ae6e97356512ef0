"""Evaluation: IR and RAGAS metrics, the models x modes grid, and the report (needs the ``eval`` extra)."""

from cluster_retriever._optional import require

for _module in ("ranx", "ragas", "matplotlib", "bm25s"):
    require(_module, "eval")
