"""Tiny random scorer checkpoints in each real file format, built offline once per session.

- ``clip/``: a transformers ``CLIPModel`` (hidden 32, 2 layers, 32 px images, patch 8,
  projection 16) with a CLIP BPE tokenizer and a PIL ``CLIPImageProcessor`` saved beside it;
  the layout of PickScore_v1 or openai/clip-vit-large-patch14.
- ``hps/HPS_tiny.pt``: that model's weights in open_clip's key layout under ``"state_dict"``
  (HPS_v2_compressed.pt's layout), with ``hps/processor/`` beside it.
- ``aesthetic/aesthetic.pth``: an aesthetic-predictor MLP state dict over 16-wide embeddings,
  with ``aesthetic/clip/`` beside it.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch


def tiny_clip_model(vocab_size: int, bos: int, eos: int) -> torch.nn.Module:
    from transformers import CLIPConfig, CLIPModel

    common = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, hidden_act="gelu")
    config = CLIPConfig(
        text_config=dict(
            vocab_size=vocab_size,
            max_position_embeddings=77,
            bos_token_id=bos,
            eos_token_id=eos,
            pad_token_id=eos,
            **common,
        ),
        vision_config=dict(image_size=32, patch_size=8, **common),
        projection_dim=16,
    )
    torch.manual_seed(0)
    model = CLIPModel(config).eval()
    with torch.no_grad():  # a logit scale other than the default, so a wrong formula shows
        model.logit_scale.fill_(3.0)
    return model


def to_open_clip(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The inverse of the scorer's conversion, written independently: CLIPModel -> open_clip keys."""
    state = model.state_dict()
    out: dict[str, torch.Tensor] = {
        "logit_scale": state["logit_scale"],
        "visual.class_embedding": state["vision_model.embeddings.class_embedding"],
        "visual.conv1.weight": state["vision_model.embeddings.patch_embedding.weight"],
        "visual.positional_embedding": state["vision_model.embeddings.position_embedding.weight"],
        "visual.ln_pre.weight": state["vision_model.pre_layrnorm.weight"],
        "visual.ln_pre.bias": state["vision_model.pre_layrnorm.bias"],
        "visual.ln_post.weight": state["vision_model.post_layernorm.weight"],
        "visual.ln_post.bias": state["vision_model.post_layernorm.bias"],
        "visual.proj": state["visual_projection.weight"].t().contiguous(),
        "token_embedding.weight": state["text_model.embeddings.token_embedding.weight"],
        "positional_embedding": state["text_model.embeddings.position_embedding.weight"],
        "ln_final.weight": state["text_model.final_layer_norm.weight"],
        "ln_final.bias": state["text_model.final_layer_norm.bias"],
        "text_projection": state["text_projection.weight"].t().contiguous(),
        "attn_mask": torch.full((77, 77), float("-inf")).triu(1),
    }
    for tower, prefix in (("vision_model", "visual.transformer"), ("text_model", "transformer")):
        for layer in range(2):
            src = f"{tower}.encoder.layers.{layer}."
            dst = f"{prefix}.resblocks.{layer}."
            for kind in ("weight", "bias"):
                out[f"{dst}attn.in_proj_{kind}"] = torch.cat(
                    [state[f"{src}self_attn.{name}_proj.{kind}"] for name in ("q", "k", "v")]
                )
                out[f"{dst}attn.out_proj.{kind}"] = state[f"{src}self_attn.out_proj.{kind}"]
                out[f"{dst}ln_1.{kind}"] = state[f"{src}layer_norm1.{kind}"]
                out[f"{dst}ln_2.{kind}"] = state[f"{src}layer_norm2.{kind}"]
                out[f"{dst}mlp.c_fc.{kind}"] = state[f"{src}mlp.fc1.{kind}"]
                out[f"{dst}mlp.c_proj.{kind}"] = state[f"{src}mlp.fc2.{kind}"]
    return {key: value.clone() for key, value in out.items()}


@pytest.fixture(scope="session")
def scorer_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from transformers import CLIPImageProcessorPil, CLIPTokenizer

    from prefdiff.evaluate.scorers.aesthetic import build_mlp
    from prefdiff.models.tiny import build_clip_tokenizer_files

    root = tmp_path_factory.mktemp("scorers")
    clip_dir = root / "clip"
    build_clip_tokenizer_files(clip_dir)
    tokenizer = CLIPTokenizer.from_pretrained(str(clip_dir))
    CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(
        str(clip_dir)
    )
    model = tiny_clip_model(len(tokenizer), tokenizer.bos_token_id, tokenizer.eos_token_id)
    model.save_pretrained(str(clip_dir))

    hps_dir = root / "hps"
    hps_dir.mkdir()
    torch.save({"state_dict": to_open_clip(model), "epoch": 1}, hps_dir / "HPS_tiny.pt")
    shutil.copytree(clip_dir, hps_dir / "processor", ignore=shutil.ignore_patterns("*.safetensors", "config.json"))

    aesthetic_dir = root / "aesthetic"
    aesthetic_dir.mkdir()
    torch.manual_seed(1)
    mlp = build_mlp(16)
    torch.save({f"layers.{key}": value for key, value in mlp.state_dict().items()}, aesthetic_dir / "aesthetic.pth")
    shutil.copytree(clip_dir, aesthetic_dir / "clip")
    return root


@pytest.fixture(scope="session")
def reference_clip(scorer_root: Path) -> torch.nn.Module:
    from transformers import CLIPModel

    return CLIPModel.from_pretrained(str(scorer_root / "clip")).eval()


@pytest.fixture()
def images() -> list:
    from PIL import Image

    generator = torch.Generator().manual_seed(0)
    pixels = torch.randint(0, 256, (3, 40, 48, 3), generator=generator, dtype=torch.uint8)
    return [Image.fromarray(p.numpy()) for p in pixels]


PROMPTS = ["a red circle", "a photo of a cat on the sea", "blue"]
