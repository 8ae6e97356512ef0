"""PairwiseLLMReranker: a LlamaIndex node postprocessor that reorders candidates by asking an
LLM which of two passages better answers the query (pairwise ranking prompting, Qin et al. 2023).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Coroutine
from concurrent.futures import ThreadPoolExecutor
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from llama_index.core.bridge.pydantic import Field, PrivateAttr
from llama_index.core.postprocessor.types import BaseNodePostprocessor
from llama_index.core.prompts import PromptTemplate
from llama_index.core.prompts.mixin import PromptDictType, PromptMixin
from llama_index.core.schema import MetadataMode, NodeWithScore, QueryBundle

from cluster_retriever.errors import JudgeUnreachable
from cluster_retriever.rerank.comparisons import FAILURES_BEFORE_GIVING_UP, Comparisons, Limits, RerankStats
from cluster_retriever.rerank.judge import DEFAULT_PROMPT, SETWISE_PROMPT, Judge, LiteLLMJudge, VerdictCache
from cluster_retriever.rerank.methods import ALGORITHMS, METHODS, Method

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RerankResult:
    """The reranked nodes of one call and what that call spent."""

    nodes: list[NodeWithScore]
    stats: RerankStats


class PairwiseLLMReranker(BaseNodePostprocessor, PromptMixin):
    """Reorder nodes by pairwise LLM judgments, cancelling the judge's position bias.

    The default (``method="budgeted"``) spends ``max_calls`` (default 80 for 30 -> 5) on the
    questions that can change the top ``top_n``, one order at a time, modelling position bias
    from the answers; the other methods ask both orders of every pair they compare. The
    output is always a permutation of the input (cut to ``top_n``): a call that times out,
    fails or answers nonsense is left out (or, for the sorting methods, its comparison goes to
    the first-stage order), and an unreachable LLM logs one warning and returns the
    first-stage order. Scores become rank-based, ``(n - rank) / n``.

    Example::

        from cluster_retriever import PairwiseLLMReranker

        reranker = PairwiseLLMReranker(model="ollama_chat/llama3.2", api_base="http://localhost:11434", top_n=5)
        engine = index.as_query_engine(similarity_top_k=30, node_postprocessors=[reranker])
        print(reranker.last_stats)   # calls, tokens, cost, cache hits, failures, wall time
    """

    model: str = Field(description="litellm model string, e.g. 'ollama_chat/llama3.2' or 'openai/gpt-4o-mini'.")
    api_base: str | None = Field(default=None, description="Server URL, e.g. http://localhost:11434 for Ollama.")
    top_n: int = Field(default=10, ge=1, description="Number of nodes returned.")
    method: Method = Field(
        default="budgeted",
        description=f"One of {METHODS}: 'budgeted' spends max_calls where they can change the top; 'tournament' "
        "asks about 3x as many for all-pairs quality under noisy judges (docs/reranker.md).",
    )
    both_orders: bool = Field(default=True, description="Ask (A,B) and (B,A); an inconsistent pair is a tie.")
    max_concurrency: int = Field(default=8, ge=1, description="LLM calls in flight at once.")
    timeout: float = Field(
        default=30.0, gt=0, description="Seconds per LLM call, connect to last byte, before it counts as failed."
    )
    max_wall_s: float | None = Field(
        default=None, gt=0, description="Deadline for one whole rerank; None: 2 * timeout. Past it, first-stage order decides."
    )
    max_calls: int | None = Field(
        default=None,
        ge=1,
        description="LLM call budget per query; None: budgeted plans for 2 per candidate + 4 per top_n place (80 for "
        "30 -> 5), setwise for half that, the others have none. budgeted and setwise stop at it with the best order "
        "they found; the others leave the comparisons past it to the first-stage order.",
    )
    set_size: int = Field(default=4, ge=2, le=8, description="Passages shown in one call by method='setwise'.")
    max_passage_chars: int = Field(default=1500, ge=1, description="Passages are cut to this many characters.")
    use_logprobs: bool | None = Field(
        default=None,
        description="Read the letters' probabilities: an unsure answer counts for little and its pair is asked again, "
        "a sure one settles it. None (default): wherever litellm passes logprobs on to the provider (OpenAI and "
        "OpenAI-compatible endpoints, Ollama's /v1 among them; not litellm's ollama/ollama_chat providers, nor "
        "Anthropic's); a server that refuses them is asked without from then on. False: letters only.",
    )
    cache_path: str | None = Field(default=None, description="SQLite file that keeps verdicts across queries and runs.")
    completion_kwargs: dict[str, Any] = Field(default_factory=dict, description="Extra arguments for litellm.acompletion.")

    _judge: Judge = PrivateAttr()
    _cache: VerdictCache = PrivateAttr()
    _last_stats: ContextVar[RerankStats | None] = PrivateAttr()
    _latest: RerankStats | None = PrivateAttr(default=None)

    def __init__(self, judge: Judge | None = None, **data: Any) -> None:
        super().__init__(**data)
        self._judge = judge or self._litellm_judge(DEFAULT_PROMPT)
        self._cache = VerdictCache(self.cache_path)
        # Per thread and per asyncio task: concurrent callers never read each other's stats.
        self._last_stats = ContextVar(f"rerank_stats_{id(self)}", default=None)

    def _litellm_judge(self, prompt: PromptTemplate, setwise_prompt: PromptTemplate = SETWISE_PROMPT) -> LiteLLMJudge:
        return LiteLLMJudge(
            self.model,
            api_base=self.api_base,
            timeout=self.timeout,
            max_passage_chars=self.max_passage_chars,
            use_logprobs=self.use_logprobs,
            prompt=prompt,
            completion_kwargs=self.completion_kwargs,
            setwise_prompt=setwise_prompt,
        )

    @classmethod
    def class_name(cls) -> str:
        return "PairwiseLLMReranker"

    @property
    def last_stats(self) -> RerankStats | None:
        """The stats of the last rerank of this thread or asyncio task, else of the last rerank
        anywhere (single-caller convenience: ``rerank`` returns each call's own)."""
        return self._last_stats.get() or self._latest

    @property
    def deadline_s(self) -> float:
        return self.max_wall_s if self.max_wall_s is not None else 2 * self.timeout

    def rerank(self, nodes: list[NodeWithScore], query: str | QueryBundle) -> RerankResult:
        """Rerank ``nodes`` for ``query``; returns the nodes and this call's stats."""
        result = _run_sync(self._rerank(nodes, _bundle(query)))
        self._remember(result.stats)
        return result

    async def arerank(self, nodes: list[NodeWithScore], query: str | QueryBundle) -> RerankResult:
        result = await self._rerank(nodes, _bundle(query))
        self._remember(result.stats)
        return result

    def _remember(self, stats: RerankStats) -> None:
        self._last_stats.set(stats)
        self._latest = stats

    def _get_prompts(self) -> PromptDictType:
        return {
            "pairwise_prompt": getattr(self._judge, "prompt", DEFAULT_PROMPT),
            "setwise_prompt": getattr(self._judge, "setwise_prompt", SETWISE_PROMPT),
        }

    def _update_prompts(self, prompts: PromptDictType) -> None:
        if not isinstance(self._judge, LiteLLMJudge):
            return
        pairwise, setwise = (
            prompts.get("pairwise_prompt", self._judge.prompt),
            prompts.get("setwise_prompt", self._judge.setwise_prompt),
        )
        for name, prompt, fields in (
            ("pairwise_prompt", pairwise, "{query}, {passage_a}, {passage_b}"),
            ("setwise_prompt", setwise, "{count}, {query}, {passages}, {letters}"),
        ):
            if not isinstance(prompt, PromptTemplate):
                raise TypeError(f"{name} must be a PromptTemplate with {fields}; got {type(prompt).__name__}.")
        assert isinstance(pairwise, PromptTemplate) and isinstance(setwise, PromptTemplate)
        self._judge = self._litellm_judge(pairwise, setwise)

    def _postprocess_nodes(self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None = None) -> list[NodeWithScore]:
        return self.rerank(nodes, _bundle(query_bundle)).nodes

    def _limits(self) -> Limits:
        return Limits(self.max_concurrency, self.both_orders, self.max_calls)

    async def _apostprocess_nodes(
        self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None = None
    ) -> list[NodeWithScore]:
        return (await self.arerank(nodes, _bundle(query_bundle))).nodes

    async def _rerank(self, nodes: list[NodeWithScore], query_bundle: QueryBundle) -> RerankResult:
        started = time.perf_counter()
        nodes = _distinct(nodes)
        stats = RerankStats(candidates=len(nodes))
        passages = [_clean(n.node.get_content(metadata_mode=MetadataMode.NONE)) for n in nodes]
        compare = Comparisons(
            self._judge, self._cache, query_bundle.query_str, passages, stats, started + self.deadline_s, self._limits()
        )
        try:
            options: dict[str, Any] = {"budget": self.max_calls} if self.method in ("budgeted", "setwise") else {}
            if self.method == "setwise":
                options["set_size"] = self.set_size
            order = await ALGORITHMS[self.method](len(nodes), compare, self.top_n, **options)
        except JudgeUnreachable as exc:
            logger.warning("Reranker LLM %s is unreachable (%s); returning the first-stage order.", self.model, exc)
            stats.fell_back, stats.stopped_by = True, "unreachable"
            order = list(range(len(nodes)))
            await compare.drain()
        past_deadline = time.perf_counter() >= compare.deadline  # budgeted stops asking at it, skipping none
        modelled = self.method in ("budgeted", "setwise")  # they rank by the verdicts they got, whenever they stop
        if not stats.fell_back and (compare.gave_up or stats.skipped_past_deadline or stats.cut_by_deadline or past_deadline):
            if compare.gave_up:
                stats.stopped_by = "failures"
                reason = (
                    f"failed {FAILURES_BEFORE_GIVING_UP} calls in a row (timeouts of {self.timeout:.1f}s, errors or nonsense)"
                )
            else:
                stats.stopped_by = "deadline"
                reason = (
                    f"reached its {self.deadline_s:.1f}s deadline (max_wall_s) after {stats.llm_calls} calls, "
                    f"{stats.cut_by_deadline} of them cut in flight; the server did not fail"
                )
            rest = "the order is the best its model found with them" if modelled else "the rest of the order is the first stage's"
            logger.warning(
                "Reranker LLM %s %s; stopped asking and kept %d verdicts, %s.",
                self.model,
                reason,
                stats.llm_calls - stats.failures - stats.cut_by_deadline,
                rest,
            )
            # failing calls leave (mostly) the first stage, even for the modelled methods
            stats.fell_back = compare.gave_up or not modelled
        elif stats.skipped_over_budget:
            stats.stopped_by = "budget"
        if sorted(order) != list(range(len(nodes))):  # never lose or repeat a candidate
            raise AssertionError(f"{self.method} returned a non-permutation: {order}")
        stats.wall_s = time.perf_counter() - started
        logger.info(
            "pairwise rerank (%s): %d candidates, %d comparisons, %d LLM calls (%d + %d tokens), %d cache hits, "
            "%d failures, %.2fs",
            self.method,
            stats.candidates,
            stats.comparisons,
            stats.llm_calls,
            stats.prompt_tokens,
            stats.completion_tokens,
            stats.cache_hits,
            stats.failures,
            stats.wall_s,
        )
        n = len(nodes)
        ranked = [NodeWithScore(node=nodes[i].node, score=(n - rank) / n) for rank, i in enumerate(order[: self.top_n])]
        return RerankResult(ranked, stats)


def _bundle(query: str | QueryBundle | None) -> QueryBundle:
    bundle = QueryBundle(query_str=query) if isinstance(query, str) else query
    if bundle is None or not bundle.query_str or not bundle.query_str.strip():
        raise ValueError("PairwiseLLMReranker needs the query: pass query_bundle (or query_str) with some text.")
    return bundle


def _run_sync(coroutine: Coroutine[Any, Any, RerankResult]) -> RerankResult:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    # Called synchronously from inside a running loop: run concurrently on a private loop.
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


def _distinct(nodes: list[NodeWithScore]) -> list[NodeWithScore]:
    """Each node once, at its first (best) first-stage position."""
    first: dict[str, NodeWithScore] = {}
    for n in nodes:
        first.setdefault(n.node.node_id, n)
    return list(first.values())


def _clean(text: str) -> str:
    """Text that encodes as UTF-8: a lone surrogate (from a badly decoded file) becomes '?'."""
    return text.encode("utf-8", "replace").decode("utf-8")
