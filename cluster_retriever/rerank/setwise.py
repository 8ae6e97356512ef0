"""``method="setwise"``: each call shows the judge 3-4 passages and asks for the best one.

One answer says something about every pair it showed, so fewer calls are needed than
pairwise (Zhuang et al. 2024, Setwise ranking). The same posterior as ``budgeted``
(``posterior.ChoicePosterior``, with one position bias per place shown) decides what to ask:
a screening round shows every candidate once, in sets spread across the first-stage ranking
(ranks ``i, i + n/c, i + 2n/c, ...``), then each round builds sets around the most valuable
pairs (``ChoicePosterior.pair_values``) and shows the candidate thought weakest where the
judge's pull is strongest, so an answer is least foregone. Any stop (budget, deadline,
failures) returns the posterior order.
"""

from __future__ import annotations

import asyncio
from typing import Protocol, runtime_checkable

import numpy as np

from cluster_retriever.rerank.posterior import ChoicePosterior
from cluster_retriever.rerank.sorting import Compare

DEFAULT_SET_SIZE = 4


def default_set_budget(n: int, top_n: int) -> int:
    """The calls ``setwise`` plans for without ``max_calls``: one per candidate and two per
    place of the top (40 for 30 -> 5, 70 for 50 -> 10, 120 for 100 -> 10)."""
    return n + 2 * min(top_n, n)


@runtime_checkable
class SetCompare(Protocol):
    """A ``Compare`` that can also ask which of several candidates, shown in order, is best."""

    @property
    def exhausted(self) -> bool: ...

    async def chosen(self, shown: tuple[int, ...]) -> int | tuple[float, ...] | None:
        """The position named, or every position's probability; None: no answer."""
        ...


class _Knockout:
    """Any plain ``Compare`` as a ``SetCompare``: the best of a set by successive pairs."""

    exhausted = False

    def __init__(self, compare: Compare) -> None:
        self.compare = compare

    async def chosen(self, shown: tuple[int, ...]) -> int | tuple[float, ...] | None:
        best, decided = 0, False
        for position in range(1, len(shown)):
            outcome = await self.compare(shown[position], shown[best])
            decided = decided or outcome != 0.5
            if outcome > 0.5:
                best = position
        return best if decided else None  # all ties: no answer, rather than one for the first shown


async def setwise(
    n: int, compare: Compare, top_n: int | None = None, budget: int | None = None, set_size: int = DEFAULT_SET_SIZE
) -> list[int]:
    """Spend ``budget`` setwise questions of ``set_size`` passages where they can change the top."""
    k = n if top_n is None else min(top_n, n)
    if n < 2:
        return list(range(n))
    size = max(2, min(set_size, n))
    asker: SetCompare = compare if isinstance(compare, SetCompare) else _Knockout(compare)
    questions = default_set_budget(n, k) if budget is None else budget
    model = ChoicePosterior(n, positions=size)
    asked: set[tuple[int, ...]] = set()
    groups = -(-n // size)
    batch = [_rotated(tuple(range(g, n, groups)), g) for g in range(groups)][:questions]
    round_size = max(2, n // (2 * size))
    while batch:
        asked.update(batch)
        answers = await asyncio.gather(*(asker.chosen(shown) for shown in batch))
        model.add([(shown, named) for shown, named in zip(batch, answers, strict=True) if named is not None])
        questions -= len(batch)
        if questions <= 0 or asker.exhausted:
            break
        batch = most_valuable_sets(model, k, asked, min(round_size, questions), size)
    return model.order()


def _rotated(shown: tuple[int, ...], by: int) -> tuple[int, ...]:
    by %= len(shown)
    return shown[by:] + shown[:by]


def most_valuable_sets(
    model: ChoicePosterior, k: int, asked: set[tuple[int, ...]], count: int, size: int
) -> list[tuple[int, ...]]:
    """Up to ``count`` sets of ``size``, each candidate in at most one: each starts from the most
    valuable pair left and adds the candidates worth most against its members; shown weakest
    (by posterior mean) at the position the judge pulls most toward."""
    i, j, value = model.pair_values(k)
    worth = np.zeros((model.n, model.n))
    worth[i, j] = worth[j, i] = value
    free = np.ones(model.n, dtype=bool)
    pull_order = np.argsort(-model.bias, kind="stable")  # positions, most favoured first
    sets: list[tuple[int, ...]] = []
    for e in np.argsort(-value, kind="stable"):
        if value[e] <= 0 or len(sets) >= count:
            break
        members = [int(i[e]), int(j[e])]
        if not free[members].all():
            continue
        while len(members) < size:
            gain = np.where(free, worth[members].sum(axis=0), -1.0)
            gain[members] = -1.0
            if gain.max() <= 0:
                break
            members.append(int(gain.argmax()))
        weakest_first = sorted(members, key=lambda m: model.mean[m])
        shown = [0] * len(members)
        for place, member in zip((int(p) for p in pull_order if p < len(members)), weakest_first, strict=False):
            shown[place] = member
        question = tuple(shown)
        if question in asked:
            question = _rotated(question, 1)
        if question not in asked:
            sets.append(question)
            free[members] = False
    return sets
