"""LAION aesthetic predictor v2: MLP(normalise(clip_image_embeds)), prompt ignored."""

from __future__ import annotations

import pytest
import torch

from prefdiff.evaluate.scorers import ScorerError, load_scorer
from prefdiff.evaluate.scorers.aesthetic import build_mlp, expected_shapes, load_mlp

from .conftest import PROMPTS


def test_expected_shapes_match_the_published_predictor():
    shapes = expected_shapes(768)
    assert shapes["layers.0.weight"] == (1024, 768)
    assert shapes["layers.2.weight"] == (128, 1024)
    assert shapes["layers.4.weight"] == (64, 128)
    assert shapes["layers.6.weight"] == (16, 64)
    assert shapes["layers.7.weight"] == (1, 16)
    assert set(shapes) == {f"layers.{i}.{p}" for i in (0, 2, 4, 6, 7) for p in ("weight", "bias")}


def test_score_is_the_mlp_of_normalised_image_embeddings(scorer_root, reference_clip, images):
    from transformers import CLIPImageProcessorPil

    scorer = load_scorer(f"aesthetic:{scorer_root / 'aesthetic' / 'aesthetic.pth'}")
    pixels = CLIPImageProcessorPil.from_pretrained(str(scorer_root / "clip"))(images=images, return_tensors="pt")
    state = torch.load(scorer_root / "aesthetic" / "aesthetic.pth", weights_only=True)
    with torch.no_grad():
        embeds = reference_clip.get_image_features(pixel_values=pixels["pixel_values"]).pooler_output
        x = embeds / embeds.norm(dim=-1, keepdim=True)
        for index in (0, 2, 4, 6, 7):  # dropout is the identity at inference
            x = x @ state[f"layers.{index}.weight"].T + state[f"layers.{index}.bias"]
    assert scorer.score(images, PROMPTS) == pytest.approx(x.squeeze(-1).tolist(), abs=1e-5)
    assert scorer.score(images, ["x", "y", "z"]) == scorer.score(images, PROMPTS)


def test_wrong_shape_names_key_and_shapes():
    state = {f"layers.{k}": v for k, v in build_mlp(16).state_dict().items()}
    state["layers.4.weight"] = torch.zeros(64, 100)
    with pytest.raises(ScorerError, match=r"'layers.4.weight' has shape \(64, 100\), expected \(64, 128\)"):
        load_mlp(state)


def test_missing_and_extra_keys():
    state = {f"layers.{k}": v for k, v in build_mlp(16).state_dict().items()}
    del state["layers.7.bias"]
    with pytest.raises(ScorerError, match="'layers.7.bias' is missing"):
        load_mlp(state)
    state = {f"layers.{k}": v for k, v in build_mlp(16).state_dict().items()} | {"layers.9.weight": torch.zeros(1)}
    with pytest.raises(ScorerError, match="unexpected keys"):
        load_mlp(state)


def test_input_width_must_match_the_clip(tmp_path, scorer_root):
    state = {f"layers.{k}": v for k, v in build_mlp(768).state_dict().items()}
    torch.save(state, tmp_path / "wide.pth")
    with pytest.raises(ScorerError, match="768-wide embeddings but the CLIP"):
        load_scorer(f"aesthetic:{tmp_path / 'wide.pth'},clip={scorer_root / 'clip'}")


def test_missing_clip_dir_says_where_to_get_it(tmp_path):
    torch.save({f"layers.{k}": v for k, v in build_mlp(16).state_dict().items()}, tmp_path / "a.pth")
    with pytest.raises(ScorerError, match="clip-vit-large-patch14") as raised:
        load_scorer(f"aesthetic:{tmp_path / 'a.pth'}")
    assert str(tmp_path / "clip") in str(raised.value)
