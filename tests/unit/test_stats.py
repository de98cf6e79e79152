"""Majority vote, Wilson interval and agreement, against values worked by hand."""

from __future__ import annotations

import math

import pytest

from prefdiff.stats import (
    TIE,
    agreement,
    majority,
    rater_agreement_with_majority,
    wilson_interval,
    win_rate,
)


@pytest.mark.parametrize(
    ("votes", "expected"),
    [
        ([0, 0, 0, 1, 1], 0),  # 3 of 5
        ([1, 1, 1, 1, 0], 1),
        ([0, 0, 1, 1, TIE], TIE),  # 2-2-1: no strict plurality
        ([0, 0, TIE, TIE, 1], TIE),  # image 0 and tie share the top
        ([0, TIE, TIE, TIE, TIE], TIE),  # most raters said "about the same"
        ([0, 0, 1, TIE, TIE], TIE),
        ([0, 0, 0, TIE, TIE], 0),
        ([1], 1),
        ([], None),
    ],
)
def test_majority(votes: list[int], expected: int | None) -> None:
    """The strict plurality over {0, 1, tie} decides; a shared top is a tie."""
    assert majority(votes) == expected


def test_wilson_interval_matches_hand_computation() -> None:
    """8 of 10, z = 1.96: centre = (0.8 + z^2/20) / (1 + z^2/10) = 0.71674,
    half = z/(1 + z^2/10) * sqrt(0.016 + z^2/400) = 0.22658 -> [0.49016, 0.94332]."""
    low, high = wilson_interval(8, 10)
    assert low == pytest.approx(0.49016, abs=1e-4)
    assert high == pytest.approx(0.94332, abs=1e-4)


def test_wilson_edges() -> None:
    """No data gives [0, 1]; all successes keeps the upper end at 1 and the lower below it."""
    assert wilson_interval(0, 0) == (0.0, 1.0)
    low, high = wilson_interval(20, 20)
    assert high == pytest.approx(1.0) and 0.8 < low < 0.85  # 20/(20 + z^2) = 0.8389
    low, high = wilson_interval(0, 20)
    assert low == pytest.approx(0.0) and 0.15 < high < 0.17


@pytest.mark.parametrize("n", range(1, 40))
def test_wilson_interval_holds_its_point_at_the_edges(n) -> None:
    """0 of n and n of n: the ends are exactly 0 and 1 (in floating point, 0 of 7 used to give a
    low end of 2.8e-17 above the point, and the report's error bars refused it)."""
    assert wilson_interval(0, n)[0] == 0.0 and wilson_interval(n, n)[1] == 1.0
    for k in range(n + 1):
        low, high = wilson_interval(k, n)
        assert low <= k / n <= high


def test_win_rate_counts_ties_half() -> None:
    """3 wins, 1 loss, 2 ties: (3 + 1) / 6."""
    result = win_rate([0, 0, 0, 1, TIE, TIE])
    assert (result.wins, result.losses, result.ties, result.n) == (3, 1, 2, 6)
    assert result.win_rate == pytest.approx(4 / 6)
    low, high = result.interval
    assert low < 4 / 6 < high
    assert result.as_json()["win_rate_ci"] == [low, high]
    assert win_rate([]).win_rate is None


def test_fleiss_kappa_by_hand() -> None:
    """Items [0,0,0,0,0] and [0,0,0,1,1]: P_1 = 1, P_2 = (9+4-5)/20 = 0.4, P_bar = 0.7;
    p = (0.8, 0.2), P_e = 0.68; kappa = 0.02 / 0.32 = 0.0625."""
    result = agreement([[0, 0, 0, 0, 0], [0, 0, 0, 1, 1], [1]])  # the single vote is ignored
    assert result.items == 2
    assert result.pairwise == pytest.approx(0.7)
    assert result.fleiss_kappa == pytest.approx(0.0625)


def test_agreement_degenerate() -> None:
    """Everyone always picks the same category: kappa is undefined (None), agreement is 1."""
    result = agreement([[0, 0, 0], [0, 0]])
    assert result.pairwise == 1.0 and result.fleiss_kappa is None
    assert agreement([]).pairwise is None


def test_perfect_disagreement_is_negative() -> None:
    """Two raters always disagree with balanced categories: kappa = (0 - 0.5) / 0.5 = -1."""
    result = agreement([[0, 1], [1, 0]])
    assert math.isclose(result.fleiss_kappa or 0.0, -1.0)


def test_rater_agreement_with_majority() -> None:
    """Votes on undecided comparisons are not counted."""
    votes = [(1, 10, 0), (1, 11, 1), (2, 10, 1), (2, 12, 0)]
    assert rater_agreement_with_majority(votes, {10: 0, 11: 1}) == {1: (2, 2), 2: (1, 0)}
