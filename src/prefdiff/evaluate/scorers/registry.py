"""Scorers named on the command line: ``KIND:PATH[,key=value...]`` and weighted mixes of them.

Kinds (see docs/scorers.md):

- ``pickscore:DIR[,processor=DIR]``
- ``clip:DIR[,processor=DIR]``
- ``hpsv2:FILE[,processor=DIR][,vision_heads=N][,text_heads=N][,act=gelu]``
- ``aesthetic:FILE[,clip=DIR]``
- ``python:module:function`` (or ``python:path/to/file.py:function``)

A mix is ``W*SPEC+W*SPEC...`` (a weight defaults to 1): the weighted sum of the scores.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from prefdiff.evaluate.scorers.base import Scorer, ScorerError, check_batch

if TYPE_CHECKING:
    import torch
    from PIL import Image

KINDS = ("pickscore", "hpsv2", "aesthetic", "clip", "python")
_OPTIONS: dict[str, tuple[str, ...]] = {
    "pickscore": ("processor",),
    "clip": ("processor",),
    "hpsv2": ("processor", "vision_heads", "text_heads", "act"),
    "aesthetic": ("clip",),
}


@dataclass(frozen=True)
class ScorerSpec:
    """A parsed ``KIND:PATH[,key=value...]``."""

    kind: str
    path: str
    options: dict[str, str] = field(default_factory=dict)


def parse_spec(spec: str) -> ScorerSpec:
    """Split ``KIND:PATH[,key=value...]``; unknown kinds and options raise ``ScorerError``."""
    kind, sep, rest = spec.strip().partition(":")
    kind = kind.strip().lower()
    if not sep or not rest:
        raise ScorerError(f"scorer spec {spec!r} is not KIND:PATH; kinds: {', '.join(KINDS)}")
    if kind not in KINDS:
        raise ScorerError(f"unknown scorer kind {kind!r} in {spec!r}; kinds: {', '.join(KINDS)}")
    if kind == "python":
        return ScorerSpec(kind, rest)
    path, *pairs = rest.split(",")
    options: dict[str, str] = {}
    for pair in pairs:
        key, eq, value = pair.partition("=")
        key = key.strip()
        if not eq or key not in _OPTIONS[kind]:
            allowed = ", ".join(f"{name}=..." for name in _OPTIONS[kind])
            raise ScorerError(f"bad option {pair!r} in {spec!r}; {kind} takes: {allowed}")
        options[key] = value.strip()
    if not path:
        raise ScorerError(f"scorer spec {spec!r} names no path")
    return ScorerSpec(kind, path, options)


def _int_option(options: dict[str, str], key: str) -> int | None:
    if key not in options:
        return None
    try:
        return int(options[key])
    except ValueError as error:
        raise ScorerError(f"option {key}={options[key]!r} is not an integer") from error


def _path_option(options: dict[str, str], key: str) -> Path | None:
    return Path(options[key]).expanduser() if key in options else None


def load_scorer(spec: str, device: str | torch.device = "cpu") -> Scorer:
    """Load one scorer from ``KIND:PATH[,key=value...]`` onto ``device``."""
    parsed = parse_spec(spec)
    name = spec.strip()
    path = Path(parsed.path).expanduser()
    options = parsed.options
    if parsed.kind == "python":
        from prefdiff.evaluate.scorers.python_scorer import load_python

        return load_python(parsed.path, name=name)
    if parsed.kind == "pickscore":
        from prefdiff.evaluate.scorers.clip_scorers import load_pickscore

        return load_pickscore(path, device, processor=_path_option(options, "processor"), name=name)
    if parsed.kind == "clip":
        from prefdiff.evaluate.scorers.clip_scorers import load_clip_score

        return load_clip_score(path, device, processor=_path_option(options, "processor"), name=name)
    if parsed.kind == "hpsv2":
        from prefdiff.evaluate.scorers.hps import load_hps

        return load_hps(
            path,
            device,
            processor=_path_option(options, "processor"),
            vision_heads=_int_option(options, "vision_heads"),
            text_heads=_int_option(options, "text_heads"),
            act=options.get("act", "gelu"),
            name=name,
        )
    from prefdiff.evaluate.scorers.aesthetic import load_aesthetic

    return load_aesthetic(path, device, clip=_path_option(options, "clip"), name=name)


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


# A "+" starts a new term only when a weighted word ("0.3*name:") or a known kind ("clip:")
# follows it, so paths containing "+" elsewhere still parse and an unknown weighted kind is reported.
_TERM_SPLIT = re.compile(
    r"\+(?=\s*(?:[0-9.eE+-]+\s*\*\s*[A-Za-z_]\w*:|(?:" + "|".join(KINDS) + r"):))"
)
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


def load_mixed(spec: str, device: str | torch.device = "cpu") -> Scorer:
    """A weighted sum of scorers, ``W*KIND:PATH+W*KIND:PATH...``; one term gives that scorer."""
    terms = parse_mix(spec)
    if len(terms) == 1 and terms[0][0] == 1.0:
        return load_scorer(terms[0][1], device)
    return MixedScorer([(weight, load_scorer(single, device)) for weight, single in terms], name=spec.strip())
