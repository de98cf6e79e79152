"""Paired win rates: per comparison (same prompt, same seed) decide A vs B, then the win rate of
A with ties counted half, a Wilson interval over comparisons and a bootstrap over prompts.

Pure functions over plain numbers; the arithmetic is unit-tested by hand. The decisions, the win
rate and its Wilson interval are `prefdiff.stats`, the label app's too, so human and automatic
results line up.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from prefdiff.stats import LOSS, TIE, WIN, WinRate, win_rate

__all__ = ["LOSS", "TIE", "WIN", "Comparison", "bootstrap_interval", "decide", "summarize"]


@dataclass(frozen=True)
class Comparison:
    """One paired comparison: the same prompt and seed from run A and run B."""

    prompt_index: int
    image_index: int
    score_a: float
    score_b: float
    category: str | None = None


def decide(score_a: float, score_b: float, tie_margin: float = 0.0) -> int:
    """WIN if A's score beats B's by more than ``tie_margin``, LOSS if B's does, else TIE."""
    if score_a - score_b > tie_margin:
        return WIN
    if score_b - score_a > tie_margin:
        return LOSS
    return TIE


def bootstrap_interval(
    decisions_by_prompt: Sequence[Sequence[int]], iterations: int = 2000, seed: int = 0, level: float = 0.95
) -> tuple[float, float]:
    """Percentile interval of the win rate when prompts (with all their comparisons) are
    resampled with replacement: the uncertainty of a prompt set, not only of the coin flips."""
    groups = [list(g) for g in decisions_by_prompt if g]
    if not groups:
        return (0.0, 1.0)
    rng = random.Random(seed)
    rates = []
    for _ in range(iterations):
        sample = [d for _ in groups for d in groups[rng.randrange(len(groups))]]
        rates.append(win_rate(sample).win_rate or 0.0)
    rates.sort()
    tail = (1.0 - level) / 2
    return (rates[int(tail * (iterations - 1))], rates[int((1 - tail) * (iterations - 1))])


def summarize(
    comparisons: Sequence[Comparison], tie_margin: float = 0.0, iterations: int = 2000, seed: int = 0
) -> dict[str, Any]:
    """The fields of ``summary.json``: ``win_rate`` (ties half), ``win_rate_ci`` (Wilson 95%),
    ``win_rate_bootstrap_ci`` (over prompts), ``wins``/``losses``/``ties``/``n``, the mean
    scores, and the same per category when the prompt set has categories."""
    decisions = [decide(c.score_a, c.score_b, tie_margin) for c in comparisons]
    by_prompt: dict[int, list[int]] = defaultdict(list)
    by_category: dict[str, list[int]] = defaultdict(list)
    for comparison, decision in zip(comparisons, decisions, strict=True):
        by_prompt[comparison.prompt_index].append(decision)
        if comparison.category is not None:
            by_category[comparison.category].append(decision)
    overall: WinRate = win_rate(decisions)
    summary: dict[str, Any] = overall.as_json()
    low, high = bootstrap_interval(list(by_prompt.values()), iterations, seed)
    summary["win_rate_bootstrap_ci"] = [low, high]
    summary["num_prompts"] = len(by_prompt)
    summary["mean_score_a"] = sum(c.score_a for c in comparisons) / len(comparisons) if comparisons else None
    summary["mean_score_b"] = sum(c.score_b for c in comparisons) / len(comparisons) if comparisons else None
    summary["by_category"] = {name: win_rate(d).as_json() for name, d in sorted(by_category.items())}
    return summary
