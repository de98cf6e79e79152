"""The report plots: the smoothing by hand, and PNGs written (or not) as the data allow."""

from __future__ import annotations

import pytest
from PIL import Image

from prefdiff.evaluate.plots import curve_plot, smooth, win_rate_plot


def test_smooth_is_an_exponential_moving_average_by_hand():
    """weight 0.5 over [1, 3, 5]: s0 = 1, s1 = 0.5*1 + 0.5*3 = 2, s2 = 0.5*2 + 0.5*5 = 3.5;
    weight 0 returns the values."""
    assert smooth([1.0, 3.0, 5.0], 0.5) == [1.0, 2.0, 3.5]
    assert smooth([4.0, 2.0], 0.0) == [4.0, 2.0]
    assert smooth([], 0.9) == []
    with pytest.raises(ValueError, match=r"in \[0, 1\)"):
        smooth([1.0], 1.0)


def test_curve_plot_draws_every_run_that_logs_the_metric(tmp_path):
    runs = {
        "dpo": [{"step": s, "loss": 0.69 - 0.01 * s, "implicit_acc": 0.5} for s in range(1, 6)],
        "sft": [{"step": s, "loss": 0.1} for s in range(1, 6)],
    }
    assert curve_plot(tmp_path / "loss.png", runs, "loss")
    assert Image.open(tmp_path / "loss.png").size == (640, 340)
    assert curve_plot(tmp_path / "acc.png", runs, "implicit_acc")  # sft lacks it: dpo alone
    assert not curve_plot(tmp_path / "margin.png", runs, "reward_margin")
    assert not (tmp_path / "margin.png").exists()


def test_win_rate_plot_writes_a_png(tmp_path):
    win_rate_plot(tmp_path / "bars.png", [("dpo", 0.77, 0.73, 0.81), ("sft", 0.70, 0.65, 0.74)], "vs base")
    image = Image.open(tmp_path / "bars.png")
    assert image.format == "PNG" and image.width == 640
