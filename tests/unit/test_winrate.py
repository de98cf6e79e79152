import pytest

from prefdiff.evaluate.winrate import (
    LOSS,
    TIE,
    WIN,
    Comparison,
    bootstrap_interval,
    decide,
    summarize,
)


def test_seven_wins_two_losses_one_tie_by_hand():
    """n = 10, wins + ties/2 = 7.5 -> win rate 0.75. Wilson 95% (z = 1.959964, z^2 = 3.841459):
    centre = (0.75 + 3.841459/20) / (1 + 3.841459/10) = 0.942073 / 1.384146 = 0.680616
    half   = 1.959964 / 1.384146 * sqrt(0.75*0.25/10 + 3.841459/400) = 1.416015 * 0.168386 = 0.238438
    -> [0.442178, 0.919054]"""
    scores = [(2.0, 1.0)] * 7 + [(1.0, 2.0)] * 2 + [(1.0, 1.0)]
    comparisons = [Comparison(i, 0, a, b, "animals" if i < 5 else "things") for i, (a, b) in enumerate(scores)]
    summary = summarize(comparisons, iterations=500)
    assert (summary["wins"], summary["losses"], summary["ties"], summary["n"]) == (7, 2, 1, 10)
    assert summary["win_rate"] == pytest.approx(0.75)
    assert summary["win_rate_ci"] == pytest.approx([0.442178, 0.919054], abs=1e-5)
    assert summary["mean_score_a"] == pytest.approx(1.7) and summary["mean_score_b"] == pytest.approx(1.2)
    assert summary["by_category"]["animals"]["wins"] == 5 and summary["by_category"]["things"]["n"] == 5
    low, high = summary["win_rate_bootstrap_ci"]
    assert 0.4 <= low <= 0.75 <= high <= 1.0


def test_decide_with_a_tie_margin():
    assert decide(1.0, 0.5) == WIN and decide(0.5, 1.0) == LOSS and decide(1.0, 1.0) == TIE
    assert decide(1.0, 0.95, tie_margin=0.1) == TIE


def test_bootstrap_is_degenerate_when_every_prompt_agrees():
    assert bootstrap_interval([[WIN, WIN], [WIN]], iterations=200) == (1.0, 1.0)
    low, high = bootstrap_interval([[WIN], [LOSS]] * 20, iterations=400, seed=1)
    assert low < 0.5 < high
