"""Scorers in half precision: every model-based kind converts all of its networks, takes pixels
in that precision, and scores close to fp32; a python scorer runs as written; a mix converts
every part."""

from __future__ import annotations

import pytest
import torch

from prefdiff.evaluate.scorers import MixedScorer, load_mixed, load_scorer

from .conftest import PROMPTS

RED = "python:tests.unit.evaluate.test_registry:mean_red"


def model_specs(root) -> list[str]:
    return [
        f"pickscore:{root / 'clip'}",
        f"clip:{root / 'clip'}",
        f"hpsv2:{root / 'hps' / 'HPS_tiny.pt'},vision_heads=2,text_heads=2",
        f"aesthetic:{root / 'aesthetic' / 'aesthetic.pth'}",
    ]


def parameter_dtypes(scorer) -> set[torch.dtype]:
    return {p.dtype for network in scorer.networks() for p in network.parameters()}


@pytest.mark.parametrize("index", range(4), ids=["pickscore", "clip", "hpsv2", "aesthetic"])
def test_bf16_scores_are_close_to_fp32(scorer_root, images, index):
    spec = model_specs(scorer_root)[index]
    full = load_scorer(spec).score(images, PROMPTS)
    half = load_scorer(spec, "cpu", torch.bfloat16)
    assert parameter_dtypes(half) == {torch.bfloat16}
    scores = half.score(images, PROMPTS)
    assert all(isinstance(value, float) for value in scores)
    scale = max(abs(value) for value in full) + 1.0
    assert scores == pytest.approx(full, abs=0.05 * scale)
    assert scores != full  # it did run in bf16


def test_none_keeps_fp32(scorer_root):
    assert parameter_dtypes(load_scorer(model_specs(scorer_root)[3], "cpu", None)) == {torch.float32}


def test_a_python_scorer_runs_as_written(images):
    assert load_scorer(RED, "cpu", torch.bfloat16).score(images, PROMPTS) == load_scorer(RED).score(images, PROMPTS)


def test_a_mix_converts_every_part(scorer_root, images):
    mixed = load_mixed(
        f"0.5*{model_specs(scorer_root)[0]}+0.5*{model_specs(scorer_root)[3]}+{RED}", "cpu", torch.bfloat16
    )
    assert isinstance(mixed, MixedScorer)
    networks = [scorer for _, scorer in mixed.parts[:2]]
    assert all(parameter_dtypes(scorer) == {torch.bfloat16} for scorer in networks)
    assert len(mixed.score(images, PROMPTS)) == len(PROMPTS)
