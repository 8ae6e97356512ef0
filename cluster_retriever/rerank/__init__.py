"""Pairwise LLM reranking (needs the ``rerank`` extra: litellm)."""

from cluster_retriever._optional import require

require("litellm", "rerank")
