"""Simulated raters: Bradley-Terry votes with ties, calibration, the majority of five."""

import numpy as np
import pytest

from prefdiff.errors import ConfigError
from prefdiff.toy.raters import (
    Verdict,
    agreement_with_oracle,
    calibrate_temperature,
    expected_agreement,
    panel_verdicts,
    vote_probabilities,
)


def test_vote_probabilities_are_a_distribution_and_symmetric():
    diffs = np.linspace(-2, 2, 41)
    first, tie, second = vote_probabilities(diffs, 0.5)
    assert np.allclose(first + tie + second, 1.0)
    assert (tie > 0).all() and (first >= 0).all() and (second >= 0).all()
    assert np.allclose(first, second[::-1])
    assert tie[20] == tie.max()  # ties are likeliest when the scores are equal


def test_vote_probabilities_match_rao_kupper_by_hand():
    """d = 1, T = 1, m = 0.25: P(A) = sigmoid(0.75) = 0.679179, P(B) = sigmoid(-1.25) = 0.222700."""
    first, tie, second = vote_probabilities(1.0, 1.0)
    assert float(first) == pytest.approx(0.679179, abs=1e-6)
    assert float(second) == pytest.approx(0.222700, abs=1e-6)
    assert float(tie) == pytest.approx(1 - 0.679179 - 0.222700, abs=1e-6)


@pytest.mark.parametrize("target", [0.6, 0.75, 0.9])
def test_calibration_hits_the_asked_single_rater_agreement(target):
    rng = np.random.default_rng(0)
    diffs = rng.normal(0, 0.4, 2000) + rng.choice([0.0, 0.5, -0.5], 2000)
    temperature = calibrate_temperature(diffs, target)
    assert expected_agreement(diffs, temperature) == pytest.approx(target, abs=1e-4)
    # and the simulated votes land near it: 2000 pairs x 5 raters (standard error about 0.005)
    verdicts = panel_verdicts(diffs, np.zeros_like(diffs), temperature, seed=1)
    agree = sum((v.votes_a if d > 0 else v.votes_b) + 0.5 * v.ties for v, d in zip(verdicts, diffs, strict=True))
    assert agree / (5 * len(diffs)) == pytest.approx(target, abs=0.025)


def test_the_majority_of_five_agrees_more_than_one_rater():
    rng = np.random.default_rng(2)
    diffs = rng.normal(0, 0.5, 3000)
    temperature = calibrate_temperature(diffs, 0.75)
    labels = [v.label_0 for v in panel_verdicts(diffs, np.zeros_like(diffs), temperature, seed=3)]
    assert agreement_with_oracle(diffs.tolist(), labels) > 0.8


def test_noiseless_raters_agree_with_the_oracle_and_tie_on_equal_scores():
    assert calibrate_temperature([0.3, -0.1, 0.7], 1.0) == 0.0
    verdicts = panel_verdicts([1.0, 0.2, 0.5], [0.5, 0.9, 0.5], 0.0, seed=0)
    assert [v.label_0 for v in verdicts] == [1.0, 0.0, 0.5]
    assert verdicts[0] == Verdict(5, 0, 0) and verdicts[2] == Verdict(0, 0, 5)


def test_an_even_split_is_a_tie():
    assert Verdict(2, 2, 1).label_0 == 0.5
    assert Verdict(2, 1, 2).label_0 == 1.0
    assert Verdict(1, 3, 1).label_0 == 0.0
    verdicts = panel_verdicts(np.zeros(400), np.zeros(400), 1.0, seed=0, raters=4)
    assert any(v.label_0 == 0.5 for v in verdicts) and any(v.label_0 != 0.5 for v in verdicts)


def test_a_verdict_depends_only_on_its_own_comparison():
    a, b = np.array([0.1, 0.4, 0.9, 0.3]), np.array([0.2, 0.4, 0.1, 0.6])
    full = panel_verdicts(a, b, 0.3, seed=7)
    assert panel_verdicts(a[:2], b[:2], 0.3, seed=7) == full[:2]


def test_bad_calibration_requests_are_refused():
    with pytest.raises(ConfigError, match="rater_agreement"):
        calibrate_temperature([0.1, 0.2], 0.5)
    with pytest.raises(ConfigError, match="equal oracle scores"):
        calibrate_temperature([0.0, 0.0], 0.75)
    with pytest.raises(ConfigError, match="raters"):
        panel_verdicts([1.0], [0.0], 0.1, seed=0, raters=0)
