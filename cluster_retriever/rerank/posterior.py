"""What the answers so far say about the candidates: a choice model fitted after every round.

One answer shows the judge some candidates (two for a pairwise question, three or four for a
setwise one) and names the best. The model (multinomial logit; Bradley-Terry for pairs):
``P(the judge names x among S) = exp(theta_x + g_pos(x)) / sum over y in S of exp(theta_y +
g_pos(y))``, where ``g`` is the judge's position bias (the last position's is 0), estimated
from the answers themselves, and ``theta_i = alpha * f_i + delta_i``: ``f_i`` is the first-stage
rank (from +1 at the top to -1 at the bottom) and ``alpha`` how much this query's answers say it
is worth, fitted too, so the first stage is evidence in proportion to how often the judge
agrees with it. Fitted by Newton's method on the log posterior (weak normal priors), with its
Laplace approximation for the uncertainty.

An answer that came with the letters' probabilities (log-probabilities) counts as that
distribution over the positions shown, not as one named position: a 0.55 answer moves the
model little and leaves the pair worth asking again (in the other order), a 0.99 answer
settles it as a plain answer does. The likelihood is then the cross-entropy of the
probabilities against the model's (a fractional observation), whose curvature is the plain
answer's.
"""

from __future__ import annotations

import numpy as np

PRIOR_SD = 1.0  # of delta, of the position effects and of alpha (around 1), on the logit scale: weak, not tuned per data
NEWTON_STEPS = 12

Answer = tuple[tuple[int, ...], int | tuple[float, ...]]
"""The candidates shown, in the order shown, and the position of the one the judge named, or
each position's probability of being named (the letters' probabilities, summing to 1)."""


class ChoicePosterior:
    """The posterior over ``n`` candidates' quality from answers about up to ``positions`` at once."""

    def __init__(self, n: int, positions: int = 2) -> None:
        self.n, self.positions = n, positions
        self.f = 1.0 - 2.0 * np.arange(n) / max(n - 1, 1)
        self.answers: list[Answer] = []
        self.mean, self.cov = self.f.copy(), np.eye(n) + np.outer(self.f, self.f)
        self.bias = np.zeros(positions)  # each position's pull; the last is 0

    @property
    def gamma(self) -> float:
        """The pull of the first position over the second, for pairwise questions."""
        return float(self.bias[0] - self.bias[1])

    def add(self, answers: list[Answer]) -> None:
        self.answers.extend(answers)
        if answers:
            self._fit()

    def order(self) -> list[int]:
        """Best first by posterior mean; the first stage breaks exact ties."""
        return sorted(range(self.n), key=lambda i: (-self.mean[i], i))

    def _fit(self) -> None:
        """Newton's method on the log posterior. The likelihood lives on the utilities' own
        coordinates (each candidate's theta, each position's pull), where one answer touches
        only the few it showed: its gradient and curvature are added there (O(answers x
        shown^2)), then carried to the parameters (delta, alpha, pulls) by one linear map."""
        n, free = self.n, self.positions - 1
        shown = np.full((len(self.answers), self.positions), -1, dtype=np.int64)
        for row, (candidates, _) in enumerate(self.answers):
            shown[row, : len(candidates)] = candidates
        present = shown >= 0
        named = np.zeros(shown.shape)
        for row, (candidates, said) in enumerate(self.answers):
            if isinstance(said, tuple):
                named[row, : len(candidates)] = said
            else:
                named[row, said] = 1.0
        # utility coordinates: theta_0..theta_{n-1}, then the pulls of positions 0..free-1
        pulled = np.broadcast_to(np.arange(self.positions) < free, shown.shape) & present
        pull_of = np.broadcast_to(n + np.arange(self.positions), shown.shape)
        to_utility = np.zeros((n + free, n + 1 + free))  # params (delta..., alpha, pulls) -> coordinates
        to_utility[np.arange(n), np.arange(n)] = 1.0
        to_utility[np.arange(n), n] = self.f
        to_utility[n:, n + 1 :] = np.eye(free)
        params = np.zeros(n + 1 + free)
        params[n] = 1.0
        prior_mean = params.copy()
        precision = np.eye(len(params)) / PRIOR_SD**2
        rows, first, second = np.nonzero(present[:, :, None] & present[:, None, :])
        for _ in range(NEWTON_STEPS):
            coordinates = to_utility @ params
            pull = np.where(pulled, coordinates[np.where(pulled, pull_of, 0)], 0.0)
            utility = np.where(present, coordinates[np.maximum(shown, 0)] + pull, -np.inf)
            p = np.exp(utility - utility.max(axis=1, keepdims=True))
            p /= p.sum(axis=1, keepdims=True)
            gradient = np.zeros(n + free)
            np.add.at(gradient, shown[present], (named - p)[present])
            np.add.at(gradient, pull_of[pulled], (named - p)[pulled])
            curvature = np.zeros((n + free, n + free))
            weight = p[rows, first] * ((first == second) - p[rows, second])
            for a_pulled, a in ((False, shown), (True, pull_of)):
                for b_pulled, b in ((False, shown), (True, pull_of)):
                    keep = np.ones(len(rows), dtype=bool)
                    if a_pulled:
                        keep &= pulled[rows, first]
                    if b_pulled:
                        keep &= pulled[rows, second]
                    np.add.at(curvature, (a[rows, first][keep], b[rows, second][keep]), weight[keep])
            gradient_params = to_utility.T @ gradient - precision @ (params - prior_mean)
            hessian = to_utility.T @ curvature @ to_utility + precision
            step = np.linalg.solve(hessian, gradient_params)
            params += step
            if np.abs(step).max() < 1e-6:
                break
        to_theta = to_utility[:n]
        self.mean = to_theta @ params
        self.cov = to_theta @ np.linalg.inv(hessian) @ to_theta.T
        self.bias = np.append(params[n + 1 :], 0.0)

    def pair_values(self, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every pair ``(i[e], j[e])`` with what getting its order wrong costs now: the nDCG
        discount the two would swap in the returned top ``k`` (zero for two candidates both
        outside it), times the posterior probability that their current order is wrong."""
        rank = np.empty(self.n, dtype=np.int64)
        rank[self.order()] = np.arange(self.n)
        discount = np.where(rank < k, 1.0 / np.log2(rank + 2.0), 0.0)
        i, j = np.triu_indices(self.n, 1)
        variance = self.cov[i, i] + self.cov[j, j] - 2.0 * self.cov[i, j]
        z = np.abs(self.mean[i] - self.mean[j]) / np.sqrt(np.maximum(variance, 1e-12))
        wrong = 1.0 / (1.0 + np.exp(1.702 * z))  # the normal tail, by its logistic approximation
        return i, j, np.abs(discount[i] - discount[j]) * wrong


def information(margin: np.ndarray) -> np.ndarray:
    """What one pairwise answer can tell, 4p(1 - p) for ``p = sigmoid(margin)``: 1 at even odds."""
    p = 1.0 / (1.0 + np.exp(-margin))
    told: np.ndarray = 4.0 * p * (1.0 - p)
    return told
