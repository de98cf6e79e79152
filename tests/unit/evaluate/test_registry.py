"""Spec parsing, the python scorer, and weighted mixes."""

from __future__ import annotations

import pytest

from prefdiff.evaluate.scorers import (
    MixedScorer,
    ScorerError,
    load_mixed,
    load_scorer,
    parse_mix,
    parse_spec,
)
from prefdiff.evaluate.scorers.python_scorer import PythonScorer

from .conftest import PROMPTS


def mean_red(image, prompt: str) -> float:
    """A python scorer: mean red channel / 255."""
    red = image.convert("RGB").getchannel("R")
    return sum(red.getdata()) / (255 * red.width * red.height)


def prompt_length(image, prompt: str) -> int:
    return len(prompt)


def not_a_number(image, prompt: str) -> str:
    return "high"


def test_parse_spec_options():
    spec = parse_spec("hpsv2:/w/HPS_v2.1_compressed.pt,processor=/w/proc,vision_heads=16")
    assert (spec.kind, spec.path) == ("hpsv2", "/w/HPS_v2.1_compressed.pt")
    assert spec.options == {"processor": "/w/proc", "vision_heads": "16"}
    assert parse_spec("python:pkg.mod:fn").path == "pkg.mod:fn"


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("imagereward:/w", "unknown scorer kind 'imagereward'"),
        ("/w/model", "not KIND:PATH"),
        ("clip:/w,heads=2", "clip takes: processor="),
        ("aesthetic:/w/a.pth,/w/clip", "aesthetic takes: clip="),
        ("pickscore:,processor=/p", "names no path"),
    ],
)
def test_bad_specs(spec, message):
    with pytest.raises(ScorerError, match=message):
        load_scorer(spec)


def test_python_scorer_from_module():
    from PIL import Image

    scorer = load_scorer("python:tests.unit.evaluate.test_registry:mean_red")
    assert isinstance(scorer, PythonScorer)
    images = [Image.new("RGB", (4, 4), (255, 0, 0)), Image.new("RGB", (4, 4), (0, 0, 0))]
    assert scorer.score(images, ["a", "b"]) == [1.0, 0.0]


def test_python_scorer_from_file(tmp_path, images):
    (tmp_path / "my_score.py").write_text("def score(image, prompt):\n    return image.width + len(prompt)\n")
    scorer = load_scorer(f"python:{tmp_path / 'my_score.py'}:score")
    assert scorer.score(images, PROMPTS) == [48.0 + len(p) for p in PROMPTS]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("python:no_such_module_xyz:fn", "cannot import module"),
        ("python:tests.unit.evaluate.test_registry:missing_fn", "has no attribute 'missing_fn'"),
        ("python:tests.unit.evaluate.test_registry:PROMPTS", "not callable"),
        ("python:justafunction", "python:module:function"),
        ("python:/nowhere/x.py:fn", "file not found"),
    ],
)
def test_python_scorer_errors(spec, message):
    with pytest.raises(ScorerError, match=message):
        load_scorer(spec)


def test_python_scorer_non_number(images):
    scorer = load_scorer("python:tests.unit.evaluate.test_registry:not_a_number")
    with pytest.raises(ScorerError, match="not a number"):
        scorer.score(images, PROMPTS)


def test_parse_mix():
    assert parse_mix("0.7*pickscore:/a+0.3*aesthetic:/b/sac+logos+ava1.pth") == [
        (0.7, "pickscore:/a"),
        (0.3, "aesthetic:/b/sac+logos+ava1.pth"),
    ]
    assert parse_mix("clip:/c + 2e-1 * hpsv2:/h.pt,vision_heads=2") == [(1.0, "clip:/c"), (0.2, "hpsv2:/h.pt,vision_heads=2")]
    with pytest.raises(ScorerError, match="unknown scorer kind"):
        parse_mix("0.5*clip:/c+0.5*imagereward:/i")


def test_mix_is_the_weighted_sum(images):
    red = "python:tests.unit.evaluate.test_registry:mean_red"
    length = "python:tests.unit.evaluate.test_registry:prompt_length"
    mixed = load_mixed(f"0.5*{red}+2*{length}")
    assert isinstance(mixed, MixedScorer)
    one, two = load_scorer(red).score(images, PROMPTS), load_scorer(length).score(images, PROMPTS)
    assert mixed.score(images, PROMPTS) == pytest.approx([0.5 * a + 2 * b for a, b in zip(one, two, strict=True)])
    assert isinstance(load_mixed(red), PythonScorer)


def test_mix_of_model_scorers(scorer_root, images):
    clip = f"clip:{scorer_root / 'clip'}"
    aesthetic = f"aesthetic:{scorer_root / 'aesthetic' / 'aesthetic.pth'}"
    mixed = load_mixed(f"0.25*{clip}+-1*{aesthetic}")
    parts = load_scorer(clip).score(images, PROMPTS), load_scorer(aesthetic).score(images, PROMPTS)
    want = [0.25 * a - b for a, b in zip(*parts, strict=True)]
    assert mixed.score(images, PROMPTS) == pytest.approx(want, abs=1e-4)
