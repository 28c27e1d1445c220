"""Multi-fidelity racing with paired statistics (used inside the objective; pruners do not work multi-objective).

A configuration is evaluated on growing prefixes of the (shuffled) search split. At each fidelity the accuracy loss
vs FxP8 exact on the *same* images is the paired difference of proportions ``(b - c) / n`` with ``b`` = images exact
gets right and the configuration gets wrong, ``c`` = the reverse (McNemar's discordant counts). Its standard error is
the Agresti-Min adjusted paired SE (0.5 added to each cell of the 2x2 table), which stays positive when ``b = c = 0``.
The race stops early, infeasible, when the one-sided lower confidence bound ``loss - z * se`` exceeds the budget.

Feasibility is decided with the same statistics the other way round: a configuration is feasible on the search split
only when the one-sided *upper* confidence bound ``loss + z * se`` is within the budget (``[budget] confidence``), so a
configuration that merely looks feasible by chance on these images is not reported (the Agresti-Min interval for paired
proportions, Agresti & Min 2005, keeps its coverage for small discordant counts).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
from scipy.stats import norm

from dse.errors import DseError


@dataclass(frozen=True)
class PairedStats:
    n: int
    b: int     # exact right, approximate wrong
    c: int     # exact wrong, approximate right
    acc_exact: float
    acc: float

    @property
    def loss(self) -> float:
        """Accuracy loss (fraction) vs exact on the same images."""
        return (self.b - self.c) / self.n

    @property
    def se(self) -> float:
        """Agresti-Min adjusted standard error of the paired difference of proportions."""
        n2 = self.n + 2.0
        p12, p21 = (self.b + 0.5) / n2, (self.c + 0.5) / n2
        return math.sqrt(max(p12 + p21 - (p12 - p21) ** 2, 0.0) / n2)

    def upper(self, confidence: float) -> float:
        """One-sided upper confidence bound of the loss at level ``confidence``."""
        return self.loss + z_score(confidence) * self.se

    def lower(self, confidence: float) -> float:
        """One-sided lower confidence bound of the loss at level ``confidence``."""
        return self.loss - z_score(confidence) * self.se


def z_score(confidence: float) -> float:
    """Standard normal quantile of a one-sided confidence level in (0.5, 1)."""
    return float(norm.ppf(confidence))


def paired_stats(correct_exact: np.ndarray, correct: np.ndarray) -> PairedStats:
    """Paired statistics of two per-image correctness vectors over the same images."""
    e = np.asarray(correct_exact, dtype=bool)
    a = np.asarray(correct, dtype=bool)
    if e.shape != a.shape or e.ndim != 1 or e.size == 0:
        raise ValueError(f"paired_stats: shapes {e.shape} and {a.shape} must be equal, 1-D, non-empty")
    return PairedStats(n=int(e.size), b=int(np.count_nonzero(e & ~a)), c=int(np.count_nonzero(~e & a)),
                       acc_exact=float(e.mean()), acc=float(a.mean()))


def resolve_fidelities(fidelities, n_total: int) -> list[int]:
    """Strictly increasing image counts ending at ``n_total``; 0 or values >= n_total mean "all"."""
    out = []
    for f in list(fidelities) + [0]:
        f = int(f)
        if f < 0:
            raise DseError(f"search.racing.fidelities: {f} is negative; use image counts like [500, 2000, 0] (0 = all)")
        f = n_total if f == 0 or f > n_total else f
        if not out or f > out[-1]:
            out.append(f)
    return out


@dataclass
class RaceResult:
    stats: PairedStats
    images: int
    stopped: bool               # True: stopped early as infeasible with high confidence
    stages: list = field(default_factory=list)  # [(images, loss, se)]

    @property
    def loss(self) -> float:
        return self.stats.loss


def race(evaluate: Callable[[int, int], np.ndarray], correct_exact: np.ndarray, budget: float,
         fidelities=(500, 2000, 0), confidence: float = 0.95) -> RaceResult:
    """Run one configuration through the race.

    ``evaluate(start, stop)`` returns the per-image correctness of the configuration on images ``start:stop`` of the
    search split (called on consecutive chunks, so each image is evaluated once); ``correct_exact`` is FxP8 exact's
    correctness on the whole split; the race stops early when the loss's lower confidence bound exceeds ``budget``
    (the allowed loss as a fraction; in Pareto mode the loss of a known point that costs no more energy, so only
    configurations that are confidently dominated are stopped).
    """
    if not 0.5 < confidence < 1.0:
        raise DseError(f"search.racing.confidence: {confidence} must be in (0.5, 1)")
    correct_exact = np.asarray(correct_exact, dtype=bool)
    steps = resolve_fidelities(fidelities, correct_exact.size)
    got = np.empty(0, dtype=bool)
    stages = []
    for k, n in enumerate(steps):
        chunk = np.asarray(evaluate(got.size, n), dtype=bool).reshape(-1)
        if chunk.size != n - got.size:
            raise ValueError(f"evaluator returned {chunk.size} results for {n - got.size} images")
        got = np.concatenate([got, chunk])
        st = paired_stats(correct_exact[:n], got)
        stages.append((n, st.loss, st.se))
        if k < len(steps) - 1 and st.lower(confidence) > budget:
            return RaceResult(st, n, True, stages)
    return RaceResult(st, n, False, stages)
