"""The reports' plots as PNG files (matplotlib, Agg backend; no torch): training curves with one
line per run on shared axes (the raw values faint, an exponential moving average bold), and win
rates as bars with their 95% intervals against the 50% line."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

CURVE_LABELS = {"loss": "loss", "implicit_acc": "implicit accuracy", "reward_margin": "implicit reward margin"}


def smooth(values: Sequence[float], weight: float = 0.8) -> list[float]:
    """Exponential moving average ``s_t = weight * s_(t-1) + (1 - weight) * x_t`` with
    ``s_0 = x_0`` (``weight`` 0 returns the values)."""
    if not 0.0 <= weight < 1.0:
        raise ValueError(f"smoothing weight must be in [0, 1) (got {weight})")
    smoothed: list[float] = []
    for value in values:
        smoothed.append(value if not smoothed else weight * smoothed[-1] + (1.0 - weight) * value)
    return smoothed


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def curve_plot(path: Path, runs: Mapping[str, Sequence[Mapping[str, float]]], key: str, weight: float = 0.8) -> bool:
    """``key`` against ``step`` for every run that logs it, on one set of axes; False (and no
    file) when no run has two points of it."""
    series = {name: [(r["step"], r[key]) for r in rows if key in r and "step" in r] for name, rows in runs.items()}
    series = {name: points for name, points in series.items() if len(points) >= 2}
    if not series:
        return False
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(6.4, 3.4), dpi=100)
    for index, (name, points) in enumerate(series.items()):
        colour = f"C{index % 10}"
        steps, values = [p[0] for p in points], [float(p[1]) for p in points]
        axes.plot(steps, values, color=colour, alpha=0.25, linewidth=0.8)
        axes.plot(steps, smooth(values, weight), color=colour, linewidth=1.8, label=name)
    axes.set_xlabel("optimizer step")
    axes.set_ylabel(CURVE_LABELS.get(key, key))
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8, ncol=2 if len(series) > 4 else 1)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    plt.close(figure)
    return True


def win_rate_plot(path: Path, rows: Sequence[tuple[str, float, float, float]], title: str = "") -> None:
    """Horizontal bars of ``(label, win rate, low, high)`` with their intervals and the 50% line."""
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(6.4, 0.45 * len(rows) + 1.2), dpi=100)
    labels = [row[0] for row in rows]
    rates = [row[1] for row in rows]
    # clamped at 0: an interval computed in floating point can end a rounding error inside its point
    # (a 0% or 100% win rate), and matplotlib refuses a negative error bar
    errors = [[max(0.0, row[1] - row[2]) for row in rows], [max(0.0, row[3] - row[1]) for row in rows]]
    positions = list(range(len(rows)))[::-1]
    axes.barh(positions, rates, xerr=errors, color="#4c78a8", capsize=3, height=0.6)
    for position, row in zip(positions, rows, strict=True):  # the figure right of its interval
        axes.text(min(row[3] + 0.015, 0.9), position, f"{row[1]:.1%}", va="center", fontsize=8)
    axes.axvline(0.5, color="#888", linestyle="--", linewidth=1)
    axes.set_yticks(positions, labels, fontsize=8)
    axes.set_xlim(0.0, 1.0)
    axes.xaxis.set_major_formatter(lambda value, _: f"{value:.0%}")
    axes.set_xlabel("win rate (95% interval)")
    if title:
        axes.set_title(title, fontsize=10)
    axes.grid(axis="x", alpha=0.3)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    plt.close(figure)
