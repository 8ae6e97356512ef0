"""The reranking methods by name: what ``PairwiseLLMReranker(method=...)`` accepts."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Literal

from cluster_retriever.rerank.budgeted import budgeted
from cluster_retriever.rerank.setwise import setwise
from cluster_retriever.rerank.sorting import allpair, heapsort, sliding, tournament

Method = Literal["budgeted", "setwise", "tournament", "allpair", "heapsort", "sliding"]
METHODS: tuple[str, ...] = ("budgeted", "setwise", "tournament", "allpair", "heapsort", "sliding")
ALGORITHMS: dict[str, Callable[..., Awaitable[list[int]]]] = {
    "budgeted": budgeted,
    "setwise": setwise,
    "tournament": tournament,
    "allpair": allpair,
    "heapsort": heapsort,
    "sliding": sliding,
}
