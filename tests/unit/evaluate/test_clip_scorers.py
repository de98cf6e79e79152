"""PickScore, CLIP score and HPS on tiny random checkpoints, against formulas computed by hand.

PickScore = exp(logit_scale) * cos(image_embeds, text_embeds); CLIP = 100 * max(cos, 0);
HPS = 100 * cos, with the open_clip checkpoint converted into a CLIPModel on load.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from prefdiff.evaluate.scorers import ScorerError, load_scorer
from prefdiff.evaluate.scorers.hps import clip_model_from_open_clip, unwrap_state_dict

from .conftest import PROMPTS, to_open_clip


def hand_cosines(model: torch.nn.Module, directory: Path, images: list, prompts: list[str]) -> torch.Tensor:
    """cos(image_i, prompt_i), computed without the scorer code: ``[B]``."""
    from transformers import CLIPImageProcessorPil, CLIPTokenizer

    tokenizer = CLIPTokenizer.from_pretrained(str(directory))
    pixels = CLIPImageProcessorPil.from_pretrained(str(directory))(images=images, return_tensors="pt")["pixel_values"]
    tokens = tokenizer(prompts, padding="max_length", max_length=77, return_tensors="pt")
    with torch.no_grad():
        image = model.get_image_features(pixel_values=pixels).pooler_output
        text = model.get_text_features(
            input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"]
        ).pooler_output
    return torch.nn.functional.cosine_similarity(image, text, dim=-1)


def test_pickscore_is_scaled_cosine(scorer_root, reference_clip, images):
    scorer = load_scorer(f"pickscore:{scorer_root / 'clip'}")
    scores = scorer.score(images, PROMPTS)
    expected = math.exp(3.0) * hand_cosines(reference_clip, scorer_root / "clip", images, PROMPTS)
    assert scores == pytest.approx(expected.tolist(), abs=1e-4)
    assert scorer.name == f"pickscore:{scorer_root / 'clip'}"


def test_pickscore_batches_like_one_batch(scorer_root, images):
    scorer = load_scorer(f"pickscore:{scorer_root / 'clip'}")
    whole = scorer.score(images, PROMPTS)
    scorer.batch_size = 1
    assert scorer.score(images, PROMPTS) == pytest.approx(whole, abs=1e-5)


def test_clip_score_is_100_cosine_clipped_at_zero(scorer_root, reference_clip, images):
    scorer = load_scorer(f"clip:{scorer_root / 'clip'},processor={scorer_root / 'clip'}")
    cosines = hand_cosines(reference_clip, scorer_root / "clip", images, PROMPTS)
    assert scorer.score(images, PROMPTS) == pytest.approx((100 * cosines.clamp_min(0)).tolist(), abs=1e-3)
    scorer.embedder.cosine = lambda imgs, prompts: torch.tensor([-0.5, 0.25])
    assert scorer.score(images[:2], PROMPTS[:2]) == [0.0, 25.0]


def test_one_prompt_per_image(scorer_root, images):
    scorer = load_scorer(f"clip:{scorer_root / 'clip'}")
    with pytest.raises(ScorerError, match="3 images but 2 prompts"):
        scorer.score(images, PROMPTS[:2])


def test_open_clip_conversion_reproduces_the_clip_model(scorer_root, reference_clip, images):
    from transformers import CLIPTokenizer

    checkpoint = torch.load(scorer_root / "hps" / "HPS_tiny.pt", weights_only=True)
    tokenizer = CLIPTokenizer.from_pretrained(str(scorer_root / "clip"))
    ids = {"bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id, "pad_token_id": 0}
    converted = clip_model_from_open_clip(unwrap_state_dict(checkpoint), 2, 2, "gelu", ids)
    assert converted.config.vision_config.image_size == 32
    assert converted.config.vision_config.patch_size == 8
    assert converted.config.text_config.num_hidden_layers == 2
    assert converted.config.projection_dim == 16
    pixels = torch.randn(2, 3, 32, 32)
    tokens = tokenizer(PROMPTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        for method, kwargs in (
            ("get_image_features", {"pixel_values": pixels}),
            ("get_text_features", dict(tokens)),
        ):
            got = getattr(converted, method)(**kwargs).pooler_output
            want = getattr(reference_clip, method)(**kwargs).pooler_output
            torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_hps_score_is_100_cosine(scorer_root, reference_clip, images):
    scorer = load_scorer(f"hpsv2:{scorer_root / 'hps' / 'HPS_tiny.pt'},vision_heads=2,text_heads=2")
    expected = 100 * hand_cosines(reference_clip, scorer_root / "clip", images, PROMPTS)
    assert scorer.score(images, PROMPTS) == pytest.approx(expected.tolist(), abs=1e-3)


def test_hps_plain_state_dict_with_module_prefix(tmp_path, scorer_root, reference_clip, images):
    import shutil

    state = {f"module.{key}": value for key, value in to_open_clip(reference_clip).items()}
    torch.save(state, tmp_path / "hps.pt")
    shutil.copytree(scorer_root / "hps" / "processor", tmp_path / "proc")
    scorer = load_scorer(f"hpsv2:{tmp_path / 'hps.pt'},processor={tmp_path / 'proc'},vision_heads=2,text_heads=2")
    expected = 100 * hand_cosines(reference_clip, scorer_root / "clip", images, PROMPTS)
    assert scorer.score(images, PROMPTS) == pytest.approx(expected.tolist(), abs=1e-3)


def test_hps_heads_cannot_be_inferred_for_tiny_widths(scorer_root):
    with pytest.raises(ScorerError, match="text_heads=N"):
        load_scorer(f"hpsv2:{scorer_root / 'hps' / 'HPS_tiny.pt'}")


def test_hps_foreign_key_is_named(tmp_path, scorer_root, reference_clip):
    import shutil

    state = to_open_clip(reference_clip)
    state["visual.transformer.resblocks.0.ls_1.gamma"] = torch.ones(32)
    torch.save(state, tmp_path / "hps.pt")
    shutil.copytree(scorer_root / "hps" / "processor", tmp_path / "processor")
    with pytest.raises(ScorerError, match="ls_1.gamma"):
        load_scorer(f"hpsv2:{tmp_path / 'hps.pt'},vision_heads=2,text_heads=2")


def test_hps_missing_processor_says_where_to_get_it(tmp_path, scorer_root):
    import shutil

    shutil.copy(scorer_root / "hps" / "HPS_tiny.pt", tmp_path / "HPS_tiny.pt")
    with pytest.raises(ScorerError, match="laion/CLIP-ViT-H-14") as raised:
        load_scorer(f"hpsv2:{tmp_path / 'HPS_tiny.pt'}")
    assert str(tmp_path / "processor") in str(raised.value)


@pytest.mark.parametrize(
    ("spec", "published"),
    [
        ("pickscore:{}/nowhere", "yuvalkirstain/PickScore_v1"),
        ("hpsv2:{}/HPS_v2.1_compressed.pt", "xswu/HPSv2"),
        ("aesthetic:{}/sac+logos+ava1-l14-linearMSE.pth", "improved-aesthetic-predictor"),
        ("clip:{}/nowhere", "openai/clip-vit-large-patch14"),
    ],
)
def test_missing_weights_name_the_path_and_where_they_are_published(tmp_path, spec, published):
    with pytest.raises(ScorerError, match=published) as raised:
        load_scorer(spec.format(tmp_path))
    assert str(tmp_path) in str(raised.value)


def test_pickscore_dir_without_processor(tmp_path, scorer_root):
    import shutil

    shutil.copytree(scorer_root / "clip", tmp_path / "model", ignore=shutil.ignore_patterns("preprocessor_config.json"))
    with pytest.raises(ScorerError, match="preprocessor_config.json"):
        load_scorer(f"pickscore:{tmp_path / 'model'}")
    scorer = load_scorer(f"pickscore:{tmp_path / 'model'},processor={scorer_root / 'clip'}")
    assert len(scorer.score([], [])) == 0
