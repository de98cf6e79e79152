"""The kind registry, spec parsing, the python scorer, and weighted mixes."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from prefdiff.evaluate.scorers import (
    KINDS,
    SCORER_KINDS,
    MixedScorer,
    ScorerError,
    ScorerKind,
    ScorerSpec,
    load_mixed,
    load_scorer,
    parse_mix,
    parse_spec,
    scorer_kind,
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
    assert parse_mix("clip:/c + 2e-1 * hpsv2:/h.pt,vision_heads=2") == [
        (1.0, "clip:/c"),
        (0.2, "hpsv2:/h.pt,vision_heads=2"),
    ]
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


def test_kinds_come_from_the_registry():
    assert KINDS == tuple(SCORER_KINDS) == ("pickscore", "hpsv2", "aesthetic", "clip", "python")
    assert all(scorer_kind(name).name == name for name in KINDS)


def test_an_unknown_kind_is_refused_with_the_known_kinds_listed():
    with pytest.raises(ScorerError) as caught:
        scorer_kind("imagereward")
    message = str(caught.value)
    assert "unknown scorer kind 'imagereward'" in message
    assert all(name in message for name in KINDS)
    with pytest.raises(ScorerError, match="kinds: pickscore, hpsv2, aesthetic, clip, python"):
        load_scorer("imagereward:/w")


@pytest.mark.parametrize(
    "kind", [kind for kind in SCORER_KINDS.values() if not kind.whole_target], ids=lambda kind: kind.name
)
def test_the_parser_accepts_exactly_each_kinds_options(kind: ScorerKind):
    given = {option: str(index) for index, option in enumerate(kind.options)}
    spec = ",".join([f"{kind.name}:/w/x", *(f"{key}={value}" for key, value in given.items())])
    assert parse_spec(spec) == ScorerSpec(kind.name, "/w/x", given)
    allowed = ", ".join(f"{option}=..." for option in kind.options)
    with pytest.raises(ScorerError, match=re.escape(f"{kind.name} takes: {allowed}")):
        parse_spec(f"{kind.name}:/w/x,not_an_option=1")


def test_a_whole_target_kind_takes_no_options():
    assert parse_spec("python:pkg.mod:fn,processor=/p") == ScorerSpec("python", "pkg.mod:fn,processor=/p")


def test_importing_the_registry_imports_neither_torch_nor_transformers():
    code = "import sys, prefdiff.evaluate.scorers; print(sorted({'torch', 'transformers'} & set(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
