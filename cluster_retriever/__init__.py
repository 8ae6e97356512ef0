"""Cluster-routed retrieval and pairwise LLM reranking for LlamaIndex.

    from cluster_retriever import ClusterIndex, ClusterRetriever

    index = ClusterIndex.build("path/to/folder", path="./chroma")
    retriever = ClusterRetriever(index, similarity_top_k=5)
    print(retriever.retrieve("what is information retrieval?"))

The reranker needs the ``rerank`` extra (``pip install 'cluster-retriever[rerank]'``);
every name is imported on first use, so the core install never needs litellm.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cluster_retriever.index import ClusterIndex
    from cluster_retriever.rerank.comparisons import RerankStats
    from cluster_retriever.rerank.pairwise import PairwiseLLMReranker, RerankResult
    from cluster_retriever.retriever import ClusterRetriever, RetrievalStats
    from cluster_retriever.tuning import ProbeTuning, tune_n_probe
    from cluster_retriever.types import Restriction, SearchParams, SearchResult, SearchStats
    from cluster_retriever.vector_store import ClusterVectorStore

try:
    __version__ = version("cluster-retriever")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"

# Imported on first use: ``import cluster_retriever`` (and the CLI's --help) loads none of
# chromadb, scikit-learn, sentence-transformers or litellm, and leaves the environment as it was.
_LAZY = {
    "ClusterIndex": "cluster_retriever.index",
    "ClusterRetriever": "cluster_retriever.retriever",
    "RetrievalStats": "cluster_retriever.retriever",
    "ClusterVectorStore": "cluster_retriever.vector_store",
    "SearchParams": "cluster_retriever.types",
    "SearchResult": "cluster_retriever.types",
    "SearchStats": "cluster_retriever.types",
    "Restriction": "cluster_retriever.types",
    "ProbeTuning": "cluster_retriever.tuning",
    "tune_n_probe": "cluster_retriever.tuning",
    "PairwiseLLMReranker": "cluster_retriever.rerank.pairwise",
    "RerankStats": "cluster_retriever.rerank.comparisons",
    "RerankResult": "cluster_retriever.rerank.pairwise",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from importlib import import_module

        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'cluster_retriever' has no attribute {name!r}")


__all__ = [
    "ClusterIndex",
    "ClusterRetriever",
    "ClusterVectorStore",
    "PairwiseLLMReranker",
    "ProbeTuning",
    "RerankResult",
    "RerankStats",
    "Restriction",
    "RetrievalStats",
    "SearchParams",
    "SearchResult",
    "SearchStats",
    "__version__",
    "tune_n_probe",
]
