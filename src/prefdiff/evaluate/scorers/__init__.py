"""Scorers behind one interface: ``Scorer.score(images, prompts) -> list[float]``, higher is better.

Load one with ``load_scorer("pickscore:/models/pickscore")`` or a weighted mix with
``load_mixed("0.7*pickscore:/models/pickscore+0.3*aesthetic:/models/aesthetic.pth")``.
Specs, formulas and where the real weights live: docs/scorers.md.
"""

from prefdiff.evaluate.scorers.base import Scorer, ScorerError
from prefdiff.evaluate.scorers.registry import (
    KINDS,
    SCORER_KINDS,
    MixedScorer,
    load_mixed,
    load_scorer,
    parse_mix,
    parse_spec,
    scorer_kind,
)
from prefdiff.evaluate.scorers.spec import ScorerKind, ScorerSpec

__all__ = [
    "KINDS",
    "SCORER_KINDS",
    "MixedScorer",
    "Scorer",
    "ScorerError",
    "ScorerKind",
    "ScorerSpec",
    "load_mixed",
    "load_scorer",
    "parse_mix",
    "parse_spec",
    "scorer_kind",
]
