"""The protocol's statistics (docs/study-protocol.md, section 4), as pure functions.

Runs of two methods with the same seed share initial weights, sample order and crops, so every
comparison is **paired by seed**: the per-seed differences ``d_s = metric(A, s) - metric(B, s)``
over the seeds both methods have, their mean, sample standard deviation, standard error
``sd / sqrt(n)`` and ``t = mean / se``, judged against the two-sided 5 % critical value of the t
distribution on ``n - 1`` degrees of freedom. Rank correlations (Spearman, ties given their
average rank) serve the dose-response and the ranking claims.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

T_CRITICAL_975 = (
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
    2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
    2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
)  # fmt: skip
"""The 0.975 quantiles of Student's t distribution for 1..30 degrees of freedom (index df - 1),
to three decimals: the standard table values (e.g. any statistics textbook's t table; df 4 ->
2.776, the protocol's critical value), i.e. the two-sided 5 % critical values."""

HOLDS, REVERSED, NOT_SHOWN = "holds", "reversed", "not shown"
NOT_MEASURED = "not measured"
"""Fewer than two seeds in common: no standard error, no verdict."""


def t_critical(df: int) -> float:
    """Two-sided 5 % critical value of t on `df` degrees of freedom (1..30)."""
    if not 1 <= df <= len(T_CRITICAL_975):
        raise ValueError(f"t_critical: df must be in 1..{len(T_CRITICAL_975)}, got {df}")
    return T_CRITICAL_975[df - 1]


@dataclass(frozen=True, kw_only=True)
class Paired:
    """A paired comparison of A against B on one metric."""

    seeds: tuple[int, ...]
    """The seeds both methods have, ascending."""
    diffs: tuple[float, ...]
    """A - B per seed, in the order of `seeds`."""
    mean: float
    sd: float
    """Sample standard deviation of the differences (ddof 1)."""
    se: float
    """sd / sqrt(n)."""
    t: float
    """mean / se (±inf when every difference is equal and non-zero; NaN for n < 2)."""
    critical: float
    """Two-sided 5 % t critical value for n - 1 degrees of freedom (NaN for n < 2)."""
    wins: int
    """Seeds in which A was strictly higher than B."""
    verdict: str
    """holds (mean > 0 and t > critical), reversed (mean < 0 and t < -critical), not shown,
    or not measured (fewer than two common seeds)."""

    @property
    def n(self) -> int:
        return len(self.diffs)


def verdict(mean: float, t: float, critical: float) -> str:
    """The protocol's decision rule (section 4)."""
    if math.isnan(t) or math.isnan(critical):
        return NOT_MEASURED
    if mean > 0 and t > critical:
        return HOLDS
    if mean < 0 and t < -critical:
        return REVERSED
    return NOT_SHOWN


def paired(a: Mapping[int, float], b: Mapping[int, float]) -> Paired:
    """A (seed -> metric) against B (seed -> metric), over the seeds both have."""
    seeds = tuple(sorted(set(a) & set(b)))
    diffs = tuple(float(a[s]) - float(b[s]) for s in seeds)
    n = len(diffs)
    mean = sum(diffs) / n if n else math.nan
    if n < 2:
        sd = se = t = critical = math.nan
    else:
        sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (n - 1))
        se = sd / math.sqrt(n)
        # every difference equal (se 0): t is unbounded in the sign of the mean, 0 for none
        unbounded = math.copysign(math.inf, mean) if mean != 0 else 0.0
        t = mean / se if se > 0 else unbounded
        critical = t_critical(n - 1)
    return Paired(
        seeds=seeds,
        diffs=diffs,
        mean=mean,
        sd=sd,
        se=se,
        t=t,
        critical=critical,
        wins=sum(d > 0 for d in diffs),
        verdict=verdict(mean, t, critical),
    )


def average_ranks(values: Sequence[float]) -> list[float]:
    """Ranks 1..n of `values` (ascending), tied values sharing the mean of their ranks:
    [10, 20, 20, 30] -> [1, 2.5, 2.5, 4]."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1  # positions i..j hold ranks i+1..j+1
        i = j + 1
    return ranks


def pearson(x: Sequence[float], y: Sequence[float]) -> float:
    """Pearson's correlation; NaN when either side is constant or has fewer than two values."""
    if len(x) != len(y):
        raise ValueError(f"pearson: {len(x)} x values but {len(y)} y values")
    n = len(x)
    if n < 2:
        return math.nan
    mx, my = sum(x) / n, sum(y) / n
    sxy = sum((a - mx) * (b - my) for a, b in zip(x, y, strict=True))
    sxx = sum((a - mx) ** 2 for a in x)
    syy = sum((b - my) ** 2 for b in y)
    if sxx == 0 or syy == 0:
        return math.nan
    return sxy / math.sqrt(sxx * syy)


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rank correlation: Pearson's on the average ranks (ties handled); NaN when
    either side is constant."""
    return pearson(average_ranks(x), average_ranks(y))
