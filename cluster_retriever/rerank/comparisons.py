"""The ``Compare`` callable of one rerank: asks the judge (in both orders, or one), caches
verdicts by content, and keeps the rerank inside its call budget and deadline, counting what
each call cost (``RerankStats``). Sorting (``sorting``) sees only ``compare(i, j)``."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from cluster_retriever.errors import JudgeUnreachable
from cluster_retriever.rerank.judge import Choice, Judge, Judged, SetwiseJudge, VerdictCache


@dataclass
class RerankStats:
    """What one rerank spent: comparisons, LLM calls, tokens and their price, wall time.

    ``failures``: calls that timed out on their own ``timeout``, failed or answered nonsense;
    ``with_logprobs``: answers that came with the letters' probabilities (``use_logprobs`` on a
    provider that returns them), which the methods weigh by how sure the judge was;
    ``cut_by_deadline``: calls in flight when the rerank's deadline passed (not failures);
    ``skipped_over_budget`` / ``skipped_past_deadline``: calls never made. ``cost_usd`` is None
    when a call's model has no price in litellm's cost map. ``stopped_by``: what ended the
    asking early, "budget", "deadline", "failures" or "unreachable" (None: it finished).
    ``fell_back``: part of the order is the first stage's; verdicts obtained are kept."""

    candidates: int = 0
    comparisons: int = 0
    llm_calls: int = 0
    cache_hits: int = 0
    failures: int = 0
    with_logprobs: int = 0
    cut_by_deadline: int = 0
    skipped_over_budget: int = 0
    skipped_past_deadline: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float | None = 0.0
    wall_s: float = 0.0
    stopped_by: str | None = None
    fell_back: bool = False

    def spend(self, judged: Judged) -> None:
        self.prompt_tokens += judged.prompt_tokens
        self.completion_tokens += judged.completion_tokens
        self.cost_usd = None if self.cost_usd is None or judged.cost_usd is None else self.cost_usd + judged.cost_usd


FAILURES_BEFORE_GIVING_UP = 6
"""Consecutive failed calls, with no success between them, after which a rerank stops asking."""


@dataclass(frozen=True)
class Limits:
    """What bounds one rerank's calls: concurrency, both orders or one, the call budget."""

    max_concurrency: int
    both_orders: bool
    max_calls: int | None


class Comparisons:
    """``compare(i, j)`` for one query: asks the judge (both orders), caches, budgets, falls back."""

    def __init__(
        self,
        judge: Judge,
        cache: VerdictCache,
        query: str,
        passages: list[str],
        stats: RerankStats,
        deadline: float,
        limits: Limits,
    ) -> None:
        self.judge, self.cache, self.limits = judge, cache, limits
        self.query = query
        self.passages = passages
        self.stats = stats
        self.deadline = deadline
        self.semaphore = asyncio.Semaphore(limits.max_concurrency)
        self.pending: dict[tuple[int, int], asyncio.Future[float]] = {}
        self.single: dict[tuple[int, ...], asyncio.Future[Choice | None]] = {}  # one-order and setwise questions
        self.unreachable = False
        self.failures_in_a_row = 0
        self.gave_up = False

    async def drain(self) -> None:
        """Let comparisons still in flight finish (they return at once once unreachable)."""
        await asyncio.gather(*self.pending.values(), *self.single.values(), return_exceptions=True)

    @property
    def exhausted(self) -> bool:
        """No further question can be asked: budget spent, deadline passed, or the judge gone."""
        budget = self.limits.max_calls
        return (
            self.unreachable
            or self.gave_up
            or time.perf_counter() >= self.deadline
            or (budget is not None and self.stats.llm_calls >= budget)
        )

    async def ordered(self, a: int, b: int) -> int | tuple[float, ...] | None:
        """One question in one order, ``a`` shown as "A" (for methods that model position bias
        themselves, ``budgeted``): the position named (0: ``a``), or both positions'
        probabilities when the judge gave them; None when it could not be answered. A pair
        counts as one comparison however many of its orders are asked."""
        if (a, b) not in self.single and (b, a) not in self.single:
            self.stats.comparisons += 1
        choice = await self._once((a, b))
        return None if choice is None else choice.said

    async def chosen(self, shown: tuple[int, ...]) -> int | tuple[float, ...] | None:
        """Setwise: the position in ``shown`` (the candidates in the order shown) of the one the
        judge names best, or every position's probability when the judge gave them; None when
        it could not be answered. One question, one comparison."""
        if shown not in self.single:
            self.stats.comparisons += 1
        choice = await self._once(shown)
        return None if choice is None else choice.said

    async def _once(self, shown: tuple[int, ...]) -> Choice | None:
        if shown not in self.single:  # one task per question: never asked twice in a query
            self.single[shown] = asyncio.ensure_future(self._ask(*shown))
        return await self.single[shown]

    async def __call__(self, i: int, j: int) -> float:
        if i > j:
            return 1.0 - await self(j, i)
        if (i, j) not in self.pending:  # one task per pair: never asked twice in a query
            self.pending[(i, j)] = asyncio.ensure_future(self._decide(i, j))
        return await self.pending[(i, j)]

    async def _decide(self, i: int, j: int) -> float:
        self.stats.comparisons += 1
        if not self.limits.both_orders:
            choice = await self._ask(i, j)
            return _first_stage(i, j) if choice is None else choice.probability_first()
        forward, backward = await asyncio.gather(self._ask(i, j), self._ask(j, i))
        if forward is None or backward is None:
            return _first_stage(i, j)
        # i is "A" in the forward question and "B" in the backward one; a split vote is a tie
        # (with log-probabilities: the two orders' probabilities that i is better, averaged).
        return (forward.probability_first() + 1.0 - backward.probability_first()) / 2

    async def _ask(self, *shown: int) -> Choice | None:
        """One question: the pair ``(a, b)`` with ``a`` as "A", or (setwise) more passages."""
        judge, cache = self.judge, self.cache
        passages = [self.passages[i] for i in shown]
        setwise = len(shown) > 2
        if setwise and not isinstance(judge, SetwiseJudge):
            raise TypeError(
                f"method='setwise' needs a judge with choose() and setwise_cache_key; {type(judge).__name__} has none."
            )
        key = cache.key(
            judge.setwise_cache_key if isinstance(judge, SetwiseJudge) and setwise else judge.cache_key, self.query, *passages
        )
        if (cached := cache.get(key)) is not None:
            self.stats.cache_hits += 1
            return Choice.decode(cached)
        if self.unreachable or self.gave_up:
            return None
        async with self.semaphore:
            # Checked after the wait, with no await before the count: queued calls respect both.
            remaining = self.deadline - time.perf_counter()
            budget = self.limits.max_calls
            if self.unreachable or self.gave_up:
                return None
            if remaining <= 0:
                self.stats.skipped_past_deadline += 1
                return None
            if budget is not None and self.stats.llm_calls >= budget:
                self.stats.skipped_over_budget += 1
                return None
            self.stats.llm_calls += 1
            try:
                asked = (
                    judge.choose(self.query, passages)
                    if isinstance(judge, SetwiseJudge) and setwise
                    else judge(self.query, *passages)
                )
                answer = await asyncio.wait_for(asked, remaining)
            except asyncio.TimeoutError:  # the rerank's deadline, not the call's own timeout
                self.stats.cut_by_deadline += 1
                return None
            except JudgeUnreachable:
                self.unreachable = True
                raise
        if isinstance(answer, Judged):
            self.stats.spend(answer)
            choice = None if answer.verdict is None else Choice(answer.verdict, _shown_shares(answer.shares, len(shown)))
        else:
            choice = None if answer is None else Choice(answer)
        if choice is None:
            self.stats.failures += 1
            self.failures_in_a_row += 1
            self.gave_up = self.gave_up or self.failures_in_a_row >= FAILURES_BEFORE_GIVING_UP
        else:
            self.failures_in_a_row = 0
            self.stats.with_logprobs += choice.shares is not None
            cache.put(key, choice.encode())
        return choice


def _shown_shares(shares: tuple[float, ...] | None, count: int) -> tuple[float, ...] | None:
    """A judge's shares, kept when they are one probability per passage shown and sum to 1."""
    if shares is None or len(shares) != count or not all(0.0 <= s <= 1.0 for s in shares) or abs(sum(shares) - 1.0) > 1e-3:
        return None
    return tuple(float(s) for s in shares)


def _first_stage(i: int, j: int) -> float:
    return 1.0 if i < j else 0.0
