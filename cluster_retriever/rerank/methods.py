"""The reranking methods by name: what ``PairwiseLLMReranker(method=...)`` accepts."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Literal

from cluster_retriever.rerank.budgeted import budgeted
from cluster_retriever.rerank.sorting import allpair, heapsort, sliding, tournament

Method = Literal["budgeted", "tournament", "allpair", "heapsort", "sliding"]
METHODS: tuple[str, ...] = ("budgeted", "tournament", "allpair", "heapsort", "sliding")
ALGORITHMS: dict[str, Callable[..., Awaitable[list[int]]]] = {
    "budgeted": budgeted,
    "tournament": tournament,
    "allpair": allpair,
    "heapsort": heapsort,
    "sliding": sliding,
}
