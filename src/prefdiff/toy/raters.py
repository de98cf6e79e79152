"""Simulated raters: Bradley-Terry noise on the oracle's score difference, ties, majority of five.

One rater shown images A and B with oracle scores ``s_a`` and ``s_b`` perceives the difference
``d = s_a - s_b`` plus logistic noise of scale ``T`` (the temperature), and calls it a tie when
the perceived difference is within ``m = TIE_FRACTION * T`` of zero (Rao and Kupper's extension
of Bradley-Terry). So, with ``sigma`` the logistic function::

    P(A) = sigma((d - m) / T)      P(B) = sigma((-d - m) / T)      P(tie) = 1 - P(A) - P(B)

``T`` is calibrated per oracle: on a sample of score differences between two base-model images,
the expected fraction of votes agreeing with the oracle's ordering (ties count half) equals the
asked single-rater agreement (default 0.75). ``T = 0`` is a noiseless rater. A comparison is
decided by five raters: the side with more votes wins; equal counts are a tie (``label_0 = 0.5``),
as in the paper's protocol.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from prefdiff.errors import ConfigError

TIE_FRACTION = 0.25


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def vote_probabilities(diff: np.ndarray | float, temperature: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(P(A), P(tie), P(B)) for one rater and score differences ``diff = s_a - s_b``."""
    d = np.asarray(diff, dtype=np.float64)
    if temperature <= 0:
        first, second = (d > 0).astype(np.float64), (d < 0).astype(np.float64)
        return first, 1.0 - first - second, second
    margin = TIE_FRACTION * temperature
    first = _sigmoid((d - margin) / temperature)
    second = _sigmoid((-d - margin) / temperature)
    return first, 1.0 - first - second, second


def expected_agreement(diffs: Sequence[float] | np.ndarray, temperature: float) -> float:
    """Expected fraction of one rater's votes that agree with the oracle's ordering (ties count
    half), over the differences that have an ordering (non-zero)."""
    d = np.abs(np.asarray(diffs, dtype=np.float64))
    d = d[d > 0]
    if len(d) == 0:
        return 1.0
    agree, tie, _ = vote_probabilities(d, temperature)
    return float(np.mean(agree + 0.5 * tie))


def calibrate_temperature(diffs: Sequence[float] | np.ndarray, agreement: float) -> float:
    """The temperature at which one rater agrees with the oracle on ``agreement`` of the pairs
    (bisection on log T; agreement falls from 1 towards 0.5 as T grows)."""
    if not 0.5 < agreement <= 1.0:
        raise ConfigError(f"toy.rater_agreement must be in (0.5, 1] (got {agreement}): 0.5 is a coin flip")
    d = np.abs(np.asarray(diffs, dtype=np.float64))
    d = d[d > 0]
    if len(d) == 0:
        raise ConfigError("cannot calibrate the raters: every sampled pair has equal oracle scores")
    if agreement == 1.0:
        return 0.0
    low, high = math.log(float(d.min()) * 1e-3), math.log(float(d.max()) * 1e3)
    for _ in range(100):
        mid = 0.5 * (low + high)
        if expected_agreement(d, math.exp(mid)) > agreement:
            low = mid
        else:
            high = mid
    return math.exp(0.5 * (low + high))


@dataclass(frozen=True)
class Verdict:
    """Five raters on one comparison: ``label_0`` is 1 (A wins), 0 (B wins) or 0.5 (tie)."""

    votes_a: int
    votes_b: int
    ties: int

    @property
    def label_0(self) -> float:
        return 1.0 if self.votes_a > self.votes_b else 0.0 if self.votes_b > self.votes_a else 0.5


def panel_verdicts(
    score_a: Sequence[float] | np.ndarray,
    score_b: Sequence[float] | np.ndarray,
    temperature: float,
    seed: int,
    raters: int = 5,
) -> list[Verdict]:
    """Each of ``raters`` votes on every comparison; comparison ``i`` draws from a generator seeded
    by ``(seed, i)``, so a verdict does not depend on which other comparisons are judged."""
    if raters < 1:
        raise ConfigError(f"toy.raters must be >= 1 (got {raters})")
    diffs = np.asarray(score_a, dtype=np.float64) - np.asarray(score_b, dtype=np.float64)
    first, tie, _ = vote_probabilities(diffs, temperature)
    verdicts = []
    for index in range(len(diffs)):
        draws = np.random.default_rng([seed, index]).random(raters)
        votes_a = int((draws < first[index]).sum())
        ties = int(((draws >= first[index]) & (draws < first[index] + tie[index])).sum())
        verdicts.append(Verdict(votes_a, raters - votes_a - ties, ties))
    return verdicts


def agreement_with_oracle(diffs: Sequence[float], labels: Sequence[float]) -> float:
    """Fraction of decided comparisons (oracle difference non-zero) whose label agrees with the
    oracle's ordering; a tie label counts half."""
    total = agree = 0.0
    for diff, label in zip(diffs, labels, strict=True):
        if diff == 0:
            continue
        total += 1
        agree += 0.5 if label == 0.5 else float((label == 1.0) == (diff > 0))
    return agree / total if total else float("nan")
