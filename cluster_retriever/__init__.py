"""Cluster-routed retrieval and pairwise LLM reranking for LlamaIndex.

    from cluster_retriever import ClusterIndex, ClusterRetriever

    index = ClusterIndex.build("path/to/folder", path="./chroma")
    retriever = ClusterRetriever(index, similarity_top_k=5)
    print(retriever.retrieve("what is information retrieval?"))

The reranker needs the ``rerank`` extra (``pip install 'cluster-retriever[rerank]'``);
it is imported on first use, so the core install never needs litellm.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import Any

from cluster_retriever.index import ClusterIndex
from cluster_retriever.retriever import ClusterRetriever, RetrievalStats
from cluster_retriever.tuning import ProbeTuning, tune_n_probe
from cluster_retriever.vector_store import ClusterVectorStore

try:
    __version__ = version("cluster-retriever")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"

_RERANK = {"PairwiseLLMReranker", "RerankStats", "RerankResult"}


def __getattr__(name: str) -> Any:
    if name in _RERANK:
        from cluster_retriever.rerank import pairwise

        return getattr(pairwise, name)
    raise AttributeError(f"module 'cluster_retriever' has no attribute {name!r}")


__all__ = [
    "ClusterIndex",
    "ClusterRetriever",
    "ClusterVectorStore",
    "PairwiseLLMReranker",
    "ProbeTuning",
    "RerankResult",
    "RerankStats",
    "RetrievalStats",
    "__version__",
    "tune_n_probe",
]
