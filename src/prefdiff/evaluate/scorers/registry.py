"""Scorers named on the command line: ``KIND:PATH[,key=value...]`` and weighted mixes of them.

Kinds (see docs/scorers.md), each a ``ScorerKind`` defined beside its scorer:

- ``pickscore:DIR[,processor=DIR]`` (``clip_scorers.PICKSCORE``)
- ``clip:DIR[,processor=DIR]`` (``clip_scorers.CLIP_SCORE``)
- ``hpsv2:FILE[,processor=DIR][,vision_heads=N][,text_heads=N][,act=gelu]`` (``hps.HPSV2``)
- ``aesthetic:FILE[,clip=DIR]`` (``aesthetic.AESTHETIC``)
- ``python:module:function`` or ``python:path/to/file.py:function`` (``python_scorer.PYTHON``)

A mix is ``W*SPEC+W*SPEC...`` (a weight defaults to 1): the weighted sum of the scores.
The scorer modules import torch and transformers only inside their loaders, so importing this
registry does not.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from prefdiff.evaluate.scorers import aesthetic, clip_scorers, hps, python_scorer
from prefdiff.evaluate.scorers.base import Scorer, ScorerError, check_batch
from prefdiff.evaluate.scorers.spec import ScorerKind, ScorerSpec

if TYPE_CHECKING:
    import torch
    from PIL import Image


def _by_name(kinds: Iterable[ScorerKind]) -> dict[str, ScorerKind]:
    """``{kind.name: kind}``; two kinds with one name are a programming error."""
    registry: dict[str, ScorerKind] = {}
    for kind in kinds:
        if kind.name in registry:
            raise ValueError(f"scorer kind {kind.name!r} is registered twice")
        registry[kind.name] = kind
    return registry


SCORER_KINDS: dict[str, ScorerKind] = _by_name(
    (clip_scorers.PICKSCORE, hps.HPSV2, aesthetic.AESTHETIC, clip_scorers.CLIP_SCORE, python_scorer.PYTHON)
)
"""Every scorer kind by name. A new scorer adds its ``ScorerKind`` here (docs/scorers.md)."""

KINDS: tuple[str, ...] = tuple(SCORER_KINDS)


def scorer_kind(name: str, spec: str = "") -> ScorerKind:
    """The registered kind ``name``, or a ``ScorerError`` listing the known kinds."""
    kind = SCORER_KINDS.get(name)
    if kind is None:
        where = f" in {spec!r}" if spec else ""
        raise ScorerError(f"unknown scorer kind {name!r}{where}; kinds: {', '.join(KINDS)}")
    return kind


def _parse_options(kind: ScorerKind, pairs: Sequence[str], spec: str) -> dict[str, str]:
    """``["key=value", ...]`` -> ``{key: value}``, refusing any key ``kind`` does not take."""
    options: dict[str, str] = {}
    for pair in pairs:
        key, eq, value = pair.partition("=")
        key = key.strip()
        if not eq or key not in kind.options:
            allowed = ", ".join(f"{name}=..." for name in kind.options) or "no options"
            raise ScorerError(f"bad option {pair!r} in {spec!r}; {kind.name} takes: {allowed}")
        options[key] = value.strip()
    return options


def parse_spec(spec: str) -> ScorerSpec:
    """Split ``KIND:PATH[,key=value...]``; unknown kinds and options raise ``ScorerError``."""
    name, sep, rest = spec.strip().partition(":")
    name = name.strip().lower()
    if not sep or not rest:
        raise ScorerError(f"scorer spec {spec!r} is not KIND:PATH; kinds: {', '.join(KINDS)}")
    kind = scorer_kind(name, spec)
    if kind.whole_target:
        return ScorerSpec(kind.name, rest)
    path, *pairs = rest.split(",")
    options = _parse_options(kind, pairs, spec)
    if not path:
        raise ScorerError(f"scorer spec {spec!r} names no path")
    return ScorerSpec(kind.name, path, options)


def load_scorer(spec: str, device: str | torch.device = "cpu", dtype: torch.dtype | None = None) -> Scorer:
    """Load one scorer from ``KIND:PATH[,key=value...]`` onto ``device``, in ``dtype`` when given
    (the loaders load fp32; :meth:`Scorer.cast` converts)."""
    parsed = parse_spec(spec)
    scorer = scorer_kind(parsed.kind).load(parsed, device, spec.strip())
    if dtype is not None:
        scorer.cast(dtype)
    return scorer


class MixedScorer(Scorer):
    """``sum_i weight_i * score_i``; each part scores the whole batch once."""

    def __init__(self, parts: Sequence[tuple[float, Scorer]], name: str) -> None:
        if not parts:
            raise ScorerError("a scorer mix needs at least one part")
        self.parts = list(parts)
        self.name = name

    def score(self, images: Sequence[Image.Image], prompts: Sequence[str]) -> list[float]:
        check_batch(images, prompts)
        total = [0.0] * len(images)
        for weight, scorer in self.parts:
            for index, value in enumerate(scorer.score(images, prompts)):
                total[index] += weight * value
        return total

    def cast(self, dtype: torch.dtype) -> None:
        for _, scorer in self.parts:
            scorer.cast(dtype)


# A "+" starts a new term only when a weighted word ("0.3*name:") or a known kind ("clip:")
# follows it, so paths containing "+" elsewhere still parse and an unknown weighted kind is reported.
_TERM_SPLIT = re.compile(r"\+(?=\s*(?:[0-9.eE+-]+\s*\*\s*[A-Za-z_]\w*:|(?:" + "|".join(map(re.escape, KINDS)) + r"):))")
_WEIGHT = re.compile(r"^\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*\*\s*(.*)$", re.DOTALL)


def parse_mix(spec: str) -> list[tuple[float, str]]:
    """``"0.7*pickscore:A+0.3*aesthetic:B"`` -> ``[(0.7, "pickscore:A"), (0.3, "aesthetic:B")]``."""
    terms: list[tuple[float, str]] = []
    for term in _TERM_SPLIT.split(spec.strip()):
        match = _WEIGHT.match(term)
        weight, single = (float(match.group(1)), match.group(2)) if match else (1.0, term)
        if not single.strip():
            raise ScorerError(f"empty term in scorer mix {spec!r}")
        parse_spec(single)  # fail early on a bad kind or option
        terms.append((weight, single.strip()))
    return terms


def load_mixed(spec: str, device: str | torch.device = "cpu", dtype: torch.dtype | None = None) -> Scorer:
    """A weighted sum of scorers, ``W*KIND:PATH+W*KIND:PATH...``, on ``device`` in ``dtype``
    (fp32 when None); one term gives that scorer."""
    terms = parse_mix(spec)
    if len(terms) == 1 and terms[0][0] == 1.0:
        return load_scorer(terms[0][1], device, dtype)
    parts = [(weight, load_scorer(single, device, dtype)) for weight, single in terms]
    return MixedScorer(parts, name=spec.strip())
