"""Cluster-routed retrieval and pairwise LLM reranking for LlamaIndex.

    from cluster_retriever import ClusterIndex, ClusterRetriever

    index = ClusterIndex.build("path/to/folder", path="./chroma")
    retriever = ClusterRetriever(index, similarity_top_k=5)
    print(retriever.retrieve("what is information retrieval?"))
"""

from cluster_retriever.index import ClusterIndex
from cluster_retriever.rerank.pairwise import PairwiseLLMReranker, RerankStats
from cluster_retriever.retriever import ClusterRetriever, RetrievalStats

__all__ = ["ClusterIndex", "ClusterRetriever", "PairwiseLLMReranker", "RerankStats", "RetrievalStats"]
