"""Pairwise LLM reranking: the judge, the sorting algorithms, the LlamaIndex postprocessor."""
