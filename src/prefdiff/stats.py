"""Majority vote, agreement between raters, and win rates with a Wilson interval.

The one copy of these statistics for the label app (human votes) and for `prefdiff compare`
and the toy (automatic decisions), so human and automatic results line up. Pure functions over
plain data, standard library only (the label app never imports torch); unit-tested by hand.

Choices are ``WIN`` = 0 (image 0 wins), ``LOSS`` = 1 (image 1 wins) and ``TIE`` = 2, as stored in
the label app's ``Vote.choice``. In an evaluation study image 0 is always run A's, so "image 0
wins" is a win of A over B.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

WIN, LOSS, TIE = 0, 1, 2
"""Decisions of image 0 (run A) against image 1 (run B): it wins, it loses, or a tie."""

Z_95 = 1.959963984540054


def majority(choices: Iterable[int]) -> int | None:
    """The decision of a group of votes: the choice with strictly the most votes among
    {image 0, image 1, tie}; when the top count is shared (2-2-1, 2-1-2, ...) it is a tie.
    None when there are no votes.

    With five raters and no ties allowed this is the plain majority (3 of 5 or more)."""
    counts = Counter(choices)
    if not counts:
        return None
    ranked = counts.most_common()
    if len(ranked) > 1 and ranked[0][1] == ranked[1][1]:
        return TIE
    return ranked[0][0]


def wilson_interval(successes: float, n: int, z: float = Z_95) -> tuple[float, float]:
    """Wilson score interval of a proportion `successes / n` (successes may be fractional:
    ties count half). Returns (0, 1) for n == 0.

        centre = (p + z^2/2n) / (1 + z^2/n)
        half   = z / (1 + z^2/n) * sqrt(p(1-p)/n + z^2/4n^2)
    """
    if n <= 0:
        return (0.0, 1.0)
    p = successes / n
    denominator = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z / denominator * math.sqrt(max(p * (1 - p) / n + z * z / (4 * n * n), 0.0))
    # The interval always holds p; in floating point its ends can miss 0 or 1 by a rounding error
    # (7 losses of 7 gave a low end of 2.8e-17 above p = 0), so they are clamped onto p.
    return (min(p, max(0.0, centre - half)), max(p, min(1.0, centre + half)))


@dataclass(frozen=True)
class WinRate:
    """Win rate of image 0 (run A) over image 1 (run B) from per-comparison decisions."""

    wins: int
    losses: int
    ties: int

    @property
    def n(self) -> int:
        """Number of decided comparisons."""
        return self.wins + self.losses + self.ties

    @property
    def win_rate(self) -> float | None:
        """(wins + ties / 2) / n, or None without decisions."""
        return (self.wins + 0.5 * self.ties) / self.n if self.n else None

    @property
    def interval(self) -> tuple[float, float]:
        """Wilson 95% interval of the win rate (ties counted half)."""
        return wilson_interval(self.wins + 0.5 * self.ties, self.n)

    def as_json(self) -> dict[str, object]:
        """The fields that `prefdiff compare`'s summary.json also has."""
        low, high = self.interval
        return {
            "win_rate": self.win_rate,
            "win_rate_ci": [low, high],
            "wins": self.wins,
            "losses": self.losses,
            "ties": self.ties,
            "n": self.n,
        }


def win_rate(decisions: Iterable[int]) -> WinRate:
    """Count wins (0), losses (1) and ties (2) of image 0."""
    counts = Counter(decisions)
    return WinRate(wins=counts[WIN], losses=counts[LOSS], ties=counts[TIE])


@dataclass(frozen=True)
class Agreement:
    """Agreement between raters over comparisons with at least two votes."""

    items: int
    pairwise: float | None  # probability that two votes on the same comparison agree
    fleiss_kappa: float | None

    def as_json(self) -> dict[str, object]:
        """JSON for the admin page."""
        return {"items": self.items, "pairwise": self.pairwise, "fleiss_kappa": self.fleiss_kappa}


def agreement(votes_per_item: Iterable[Sequence[int]]) -> Agreement:
    """Pairwise agreement and Fleiss' kappa (the version that allows a varying number of
    raters per item): for item i with n_i votes, n_ij of them for category j,

        P_i = (sum_j n_ij^2 - n_i) / (n_i (n_i - 1)),   P_bar = mean_i P_i,
        p_j = sum_i n_ij / sum_i n_i,                    P_e = sum_j p_j^2,
        kappa = (P_bar - P_e) / (1 - P_e)   (None when P_e == 1: everyone always agrees
        on one category, so chance agreement explains everything).
    """
    per_item = [Counter(v) for v in votes_per_item if len(v) >= 2]
    if not per_item:
        return Agreement(0, None, None)
    p_items = []
    totals: Counter[int] = Counter()
    for counts in per_item:
        n_i = sum(counts.values())
        p_items.append((sum(c * c for c in counts.values()) - n_i) / (n_i * (n_i - 1)))
        totals.update(counts)
    p_bar = sum(p_items) / len(p_items)
    grand = sum(totals.values())
    p_e = sum((c / grand) ** 2 for c in totals.values())
    kappa = None if math.isclose(p_e, 1.0) else (p_bar - p_e) / (1 - p_e)
    return Agreement(len(per_item), p_bar, kappa)


def rater_agreement_with_majority(
    votes: Iterable[tuple[int, int, int]], decisions: Mapping[int, int]
) -> dict[int, tuple[int, int]]:
    """Per rater: (votes on decided comparisons, of which equal to the decision).

    `votes` are (rater_id, comparison_id, choice); `decisions` maps comparison -> decision.
    """
    result: dict[int, list[int]] = {}
    for rater_id, comparison_id, choice in votes:
        decision = decisions.get(comparison_id)
        if decision is None:
            continue
        entry = result.setdefault(rater_id, [0, 0])
        entry[0] += 1
        entry[1] += int(choice == decision)
    return {rater: (total, agree) for rater, (total, agree) in result.items()}


def vote_fraction(votes_0: int, votes_1: int, votes_tie: int = 0) -> float:
    """The share of the votes for image 0, a tie counting half: the soft label of a comparison
    (``preference_0``). 4 of 5 votes for image 0 give 0.8; a 2-2-1 split gives 0.5."""
    total = votes_0 + votes_1 + votes_tie
    if total <= 0:
        raise ValueError("vote_fraction needs at least one vote")
    return (votes_0 + 0.5 * votes_tie) / total


def bradley_terry_preference(score_0: float, score_1: float, temperature: float) -> float:
    """``P(image 0 preferred) = sigmoid((score_0 - score_1) / temperature)``: the Bradley-Terry
    model of a reward model's score difference. A smaller temperature gives harder labels."""
    if not temperature > 0:
        raise ValueError(f"the Bradley-Terry temperature must be > 0 (got {temperature})")
    z = (score_0 - score_1) / temperature
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    return math.exp(z) / (1.0 + math.exp(z))
