"""Cluster-routed retrieval and pairwise LLM reranking for LlamaIndex.

    from cluster_retriever import ClusterIndex, ClusterRetriever

    index = ClusterIndex.build("path/to/folder", path="./chroma")
    retriever = ClusterRetriever(index, similarity_top_k=5)
    print(retriever.retrieve("what is information retrieval?"))
"""

from cluster_retriever.index import ClusterIndex
from cluster_retriever.rerank.pairwise import PairwiseLLMReranker, RerankStats
from cluster_retriever.retriever import ClusterRetriever, RetrievalStats
from cluster_retriever.tuning import ProbeTuning, tune_n_probe

__all__ = ["ClusterIndex", "ClusterRetriever", "PairwiseLLMReranker", "ProbeTuning", "RerankStats", "RetrievalStats", "tune_n_probe"]
