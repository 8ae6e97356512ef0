"""Ranking from pairwise comparisons, over any judge.

Items are indices ``0..n-1`` in first-stage order. ``compare(i, j)`` returns how strongly
``i`` beats ``j``: 1.0 (i better), 0.0 (j better) or 0.5 (a tie: the two orders disagreed);
with the judge's log-probabilities, the probability that ``i`` is better, between them.
Each algorithm returns a permutation of ``range(n)``: nothing dropped, nothing repeated.
Ties and unresolved positions always fall back to the first-stage order.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable

Compare = Callable[[int, int], Awaitable[float]]


async def _better(compare: Compare, i: int, j: int) -> bool:
    outcome = await compare(i, j)
    return outcome > 0.5 or (outcome == 0.5 and i < j)


def _by_score(items: list[int], score: dict[int, float]) -> list[int]:
    return sorted(items, key=lambda i: (-score[i], i))


async def _round_robin(items: list[int], compare: Compare) -> dict[int, float]:
    """Every pair once, concurrently; score = wins (a tie counts half)."""
    score = {i: 0.0 for i in items}
    pairs = list(itertools.combinations(items, 2))
    for (i, j), outcome in zip(pairs, await asyncio.gather(*(compare(i, j) for i, j in pairs)), strict=False):
        score[i] += outcome
        score[j] += 1.0 - outcome
    return score


async def allpair(n: int, compare: Compare, top_n: int | None = None) -> list[int]:
    """Every pair, both orders: O(n^2) comparisons, the most robust to a noisy judge."""
    return _by_score(list(range(n)), await _round_robin(list(range(n)), compare))


async def heapsort(n: int, compare: Compare, top_n: int | None = None) -> list[int]:
    """Top-k by a binary max-heap: O(n + k log n) comparisons; one wrong answer can bury an item."""
    k = n if top_n is None else min(top_n, n)
    heap = list(range(n))

    async def sift_down(root: int, size: int) -> None:
        while (child := 2 * root + 1) < size:
            if child + 1 < size and await _better(compare, heap[child + 1], heap[child]):
                child += 1
            if not await _better(compare, heap[child], heap[root]):
                return
            heap[root], heap[child] = heap[child], heap[root]
            root = child

    for root in range(n // 2 - 1, -1, -1):
        await sift_down(root, n)
    ranked: list[int] = []
    size = n
    while len(ranked) < k:
        ranked.append(heap[0])
        size -= 1
        heap[0] = heap[size]
        await sift_down(0, size)
    return ranked + sorted(heap[:size])


async def sliding(n: int, compare: Compare, top_n: int | None = None) -> list[int]:
    """k bubble passes from the bottom: O(k n) comparisons, sequential within a pass."""
    k = n if top_n is None else min(top_n, n)
    order = list(range(n))
    for settled in range(min(k, n - 1)):
        for pos in range(n - 1, settled, -1):
            if await _better(compare, order[pos], order[pos - 1]):
                order[pos], order[pos - 1] = order[pos - 1], order[pos]
    return order


async def tournament(n: int, compare: Compare, top_n: int | None = None, rounds: int = 7, head_extra: int = 5) -> list[int]:
    """The noise-robust default: a Swiss tournament finds the likely head cheaply, then a
    round robin orders the head carefully.

    Each Swiss round pairs items of similar score (first-stage order breaks ties) and asks
    all its pairs concurrently, so one wrong answer costs an item one point, not its place.
    The head (``top_n + head_extra`` items) then plays every pair; its order is by round-robin
    wins, then Swiss score. O(rounds * n / 2 + head^2 / 2) comparisons.
    """
    k = n if top_n is None else min(top_n, n)
    head_size = min(n, k + head_extra)
    if head_size * (head_size - 1) // 2 + rounds * (n // 2) >= n * (n - 1) // 2:
        return await allpair(n, compare)  # too few items for the shortcut to save anything
    swiss = {i: 0.0 for i in range(n)}
    opponents: dict[int, list[int]] = {i: [] for i in range(n)}
    played: set[tuple[int, int]] = set()
    for _ in range(rounds):
        pairs = _swiss_pairs(_by_score(list(range(n)), swiss), played)
        for (i, j), outcome in zip(pairs, await asyncio.gather(*(compare(i, j) for i, j in pairs)), strict=False):
            swiss[i] += outcome
            swiss[j] += 1.0 - outcome
            opponents[i].append(j)
            opponents[j].append(i)
    # Equal scores are split by Buchholz (the opponents' total score), as Swiss events do.
    buchholz = {i: sum(swiss[j] for j in opponents[i]) for i in range(n)}
    standing = sorted(range(n), key=lambda i: (-swiss[i], -buchholz[i], i))
    head = standing[:head_size]
    wins = await _round_robin(head, compare)
    head = sorted(head, key=lambda i: (-wins[i], -swiss[i], i))
    return head + standing[head_size:]


def _swiss_pairs(standing: list[int], played: set[tuple[int, int]]) -> list[tuple[int, int]]:
    """Pair neighbours in the standing, skipping pairs that already met where possible."""
    waiting = list(standing)
    pairs = []
    while len(waiting) > 1:
        first = waiting.pop(0)
        partner = next((j for j in waiting if (min(first, j), max(first, j)) not in played), waiting[0])
        waiting.remove(partner)
        pair = (min(first, partner), max(first, partner))
        played.add(pair)
        pairs.append(pair)
    return pairs
