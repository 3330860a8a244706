"""The protocol's paired t decision rule and Spearman's rank correlation, against values worked
by hand (and standard t-table quantiles)."""

from __future__ import annotations

import math

import pytest

from studies.paired import (
    HOLDS,
    NOT_MEASURED,
    NOT_SHOWN,
    REVERSED,
    average_ranks,
    paired,
    spearman,
    t_critical,
)


def seeds(values: list[float], start: int = 0) -> dict[int, float]:
    return {start + i: v for i, v in enumerate(values)}


def test_t_critical_values_are_the_standard_quantiles() -> None:
    # two-sided 5 % (0.975 quantile) from any t table
    assert t_critical(4) == 2.776  # the protocol's value for 5 seeds
    assert t_critical(1) == 12.706
    assert t_critical(2) == 4.303
    assert t_critical(10) == 2.228
    assert t_critical(30) == 2.042
    table = [t_critical(df) for df in range(1, 31)]
    assert table == sorted(table, reverse=True)  # shrinks towards 1.96 with df
    for bad in (0, 31):
        with pytest.raises(ValueError, match="df must be in 1..30"):
            t_critical(bad)


def test_paired_differences_one_to_five_hold() -> None:
    # d = [1, 2, 3, 4, 5]: mean 3, sd sqrt(10/4) = 1.5811, se 1.5811/sqrt(5) = 0.7071,
    # t = 3 / 0.7071 = 4.243 > 2.776
    p = paired(seeds([1, 2, 3, 4, 5]), seeds([0, 0, 0, 0, 0]))
    assert p.seeds == (0, 1, 2, 3, 4) and p.diffs == (1, 2, 3, 4, 5) and p.n == 5
    assert p.mean == 3.0
    assert p.sd == pytest.approx(1.5811, abs=1e-4)
    assert p.se == pytest.approx(0.7071, abs=1e-4)
    assert p.t == pytest.approx(4.243, abs=1e-3)
    assert p.critical == 2.776 and p.wins == 5 and p.verdict == HOLDS
    q = paired(seeds([0, 0, 0, 0, 0]), seeds([1, 2, 3, 4, 5]))
    assert q.t == pytest.approx(-4.243, abs=1e-3) and q.wins == 0 and q.verdict == REVERSED


def test_a_consistent_small_effect_holds_paired() -> None:
    # A is B plus [0.01, 0.02, 0.01, 0.02, 0.015]: mean 0.015, sd sqrt(4 * 0.005^2 / 4) = 0.005,
    # se 0.005 / sqrt(5) = 0.002236, t = 6.708: holds, although the seeds spread by 0.2
    b = [0.80, 0.85, 0.90, 0.95, 1.00]
    a = [x + d for x, d in zip(b, [0.01, 0.02, 0.01, 0.02, 0.015], strict=True)]
    p = paired(seeds(a), seeds(b))
    assert p.mean == pytest.approx(0.015)
    assert p.sd == pytest.approx(0.005)
    assert p.se == pytest.approx(0.0022361, abs=1e-6)
    assert p.t == pytest.approx(6.708, abs=1e-3) and p.verdict == HOLDS


def test_not_shown_and_only_common_seeds() -> None:
    # d = [1, -1, 2, -2, 0.5]: mean 0.1, sd sqrt((0.81+1.21+3.61+4.41+0.16)/4) = 1.5969,
    # se 0.7141, t 0.140: not shown; A higher in 3 of 5
    p = paired(seeds([1, -1, 2, -2, 0.5]), seeds([0] * 5))
    assert p.mean == pytest.approx(0.1)
    assert p.sd == pytest.approx(1.5969, abs=1e-4)
    assert p.t == pytest.approx(0.140, abs=1e-3)
    assert p.wins == 3 and p.verdict == NOT_SHOWN
    # seeds 0-4 against 2-6: only 2, 3, 4 pair; 3 seeds -> 2 df -> 4.303
    q = paired(seeds([1, 1, 2, 3, 4]), seeds([0, 0, 0, 0, 0], start=2))
    assert q.seeds == (2, 3, 4) and q.diffs == (2, 3, 4) and q.critical == 4.303
    # mean 3, sd 1, se 0.5774, t 5.196 > 4.303
    assert q.t == pytest.approx(5.196, abs=1e-3) and q.verdict == HOLDS


def test_degenerate_pairs() -> None:
    one = paired({0: 1.0}, {0: 0.0})
    assert one.n == 1 and math.isnan(one.se) and one.verdict == NOT_MEASURED
    none = paired({0: 1.0}, {1: 0.0})
    assert none.n == 0 and math.isnan(none.mean) and none.verdict == NOT_MEASURED
    same = paired(seeds([0.5, 0.5, 0.5]), seeds([0.5, 0.5, 0.5]))
    assert same.se == 0 and same.t == 0 and same.verdict == NOT_SHOWN
    ahead = paired(seeds([2.0, 3.0, 4.0]), seeds([1.0, 2.0, 3.0]))  # +1 in every seed
    assert ahead.t == math.inf and ahead.verdict == HOLDS and ahead.wins == 3


def test_average_ranks_share_ties() -> None:
    assert average_ranks([10, 20, 20, 30]) == [1, 2.5, 2.5, 4]
    assert average_ranks([3, 1, 2]) == [3, 1, 2]
    assert average_ranks([5, 5, 5]) == [2, 2, 2]
    assert average_ranks([2, 1, 2, 1, 0]) == [4.5, 2.5, 4.5, 2.5, 1]


def test_spearman_by_hand() -> None:
    # x ranks [1.5, 1.5, 3, 4], y ranks [1, 2.5, 2.5, 4]; deviations from 2.5:
    # dx [-1, -1, .5, 1.5], dy [-1.5, 0, 0, 1.5]; sxy 3.75, sxx 4.5, syy 4.5 -> 0.8333
    assert spearman([0, 0, 2, 5], [0, 1, 1, 3]) == pytest.approx(3.75 / 4.5)
    assert spearman([1, 2, 3, 4], [10, 20, 30, 100]) == pytest.approx(1.0)
    assert spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert math.isnan(spearman([1, 1, 1], [1, 2, 3]))
    assert math.isnan(spearman([1], [2]))
    with pytest.raises(ValueError, match="3 x values but 2"):
        spearman([1, 2, 3], [1, 2])
