"""HPSv2 / HPSv2.1: an open_clip ViT-H-14 checkpoint converted into a transformers ``CLIPModel``.

The checkpoint (``HPS_v2_compressed.pt``, ``HPS_v2.1_compressed.pt``) is an open_clip state dict,
possibly nested under ``"state_dict"``. Its shape (widths, depths, patch and image size, vocab,
context length, embedding width) is read from the tensors, so tiny test checkpoints load too.
Attention heads are not stored: open_clip's head widths are assumed (64, and 80 for a vision
width of 1280 as in ViT-H-14), or given as ``vision_heads=`` / ``text_heads=``.

Score: ``100 * cos(image_embeds, text_embeds)`` (HPS's benchmark convention).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prefdiff.evaluate.scorers.base import (
    BatchedScorer,
    ClipEmbedder,
    ScorerError,
    load_clip_processor,
    load_tensors,
    missing,
)
from prefdiff.evaluate.scorers.spec import ScorerKind, ScorerSpec

if TYPE_CHECKING:
    import torch
    from PIL import Image

HPS_PUBLISHED = (
    "https://huggingface.co/xswu/HPSv2 (HPS_v2_compressed.pt or HPS_v2.1_compressed.pt); "
    "tokenizer and image processor: https://huggingface.co/laion/CLIP-ViT-H-14-laion2B-s32B-b79K"
)
# open_clip's head width per vision width where it is not 64 (ViT-H-14, ViT-g-14, ViT-bigG-14).
_VISION_HEAD_WIDTHS = {1280: 80, 1408: 88, 1664: 104}
_IGNORED = {"attn_mask", "text.attn_mask"}
_BLOCK = re.compile(r"^(visual\.)?transformer\.resblocks\.(\d+)\.(.+)$")
_BLOCK_PARTS = {
    "ln_1.weight": "layer_norm1.weight",
    "ln_1.bias": "layer_norm1.bias",
    "ln_2.weight": "layer_norm2.weight",
    "ln_2.bias": "layer_norm2.bias",
    "attn.out_proj.weight": "self_attn.out_proj.weight",
    "attn.out_proj.bias": "self_attn.out_proj.bias",
    "mlp.c_fc.weight": "mlp.fc1.weight",
    "mlp.c_fc.bias": "mlp.fc1.bias",
    "mlp.c_proj.weight": "mlp.fc2.weight",
    "mlp.c_proj.bias": "mlp.fc2.bias",
}
_TOP = {
    "visual.class_embedding": "vision_model.embeddings.class_embedding",
    "visual.conv1.weight": "vision_model.embeddings.patch_embedding.weight",
    "visual.positional_embedding": "vision_model.embeddings.position_embedding.weight",
    "visual.ln_pre.weight": "vision_model.pre_layrnorm.weight",
    "visual.ln_pre.bias": "vision_model.pre_layrnorm.bias",
    "visual.ln_post.weight": "vision_model.post_layernorm.weight",
    "visual.ln_post.bias": "vision_model.post_layernorm.bias",
    "token_embedding.weight": "text_model.embeddings.token_embedding.weight",
    "positional_embedding": "text_model.embeddings.position_embedding.weight",
    "ln_final.weight": "text_model.final_layer_norm.weight",
    "ln_final.bias": "text_model.final_layer_norm.bias",
    "logit_scale": "logit_scale",
}
_REQUIRED = (
    "visual.conv1.weight",
    "visual.positional_embedding",
    "visual.proj",
    "token_embedding.weight",
    "positional_embedding",
    "text_projection",
)


def unwrap_state_dict(checkpoint: Any) -> dict[str, torch.Tensor]:
    """The tensors of an open_clip checkpoint: under ``"state_dict"`` if nested, ``module.`` stripped."""
    state = checkpoint.get("state_dict", checkpoint) if isinstance(checkpoint, Mapping) else None
    if not isinstance(state, Mapping):
        raise ScorerError("an HPS checkpoint must be a state dict (or a dict with a 'state_dict' key)")
    return {(key[len("module.") :] if key.startswith("module.") else key): value for key, value in state.items()}


def _heads(width: int, given: int | None, head_width: int, which: str) -> int:
    if given is not None:
        if given < 1 or width % given:
            raise ScorerError(f"{which}_heads={given} does not divide the {which} width {width}")
        return given
    if width % head_width or width < head_width:
        raise ScorerError(
            f"cannot infer the {which} attention heads for width {width} (open_clip head width "
            f"{head_width}); give {which}_heads=N in the scorer spec"
        )
    return width // head_width


def clip_config_from_open_clip(
    state: Mapping[str, torch.Tensor],
    vision_heads: int | None = None,
    text_heads: int | None = None,
    act: str = "gelu",
    tokenizer_ids: Mapping[str, int] | None = None,
) -> Any:
    """A ``CLIPConfig`` with the shapes of an open_clip state dict.

    ``act`` is ``gelu`` for the LAION ViT-H-14 that HPS fine-tunes, ``quick_gelu`` for OpenAI's.
    ``tokenizer_ids`` (``bos_token_id``, ``eos_token_id``, ``pad_token_id``) tell the text model
    which token to pool (the first end-of-text).
    """
    from transformers import CLIPConfig

    for key in _REQUIRED:
        if key not in state:
            raise ScorerError(f"not an open_clip CLIP state dict: key {key!r} is missing")

    def depth(prefix: str) -> int:
        pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
        return 1 + max((int(m.group(1)) for k in state if (m := pattern.match(k))), default=-1)

    vision_width, _, patch, _ = state["visual.conv1.weight"].shape
    positions = state["visual.positional_embedding"].shape[0] - 1
    grid = math.isqrt(positions)
    if grid * grid != positions:
        raise ScorerError(f"visual.positional_embedding has {positions + 1} rows, not 1 + a square grid")
    vocab_size, text_width = state["token_embedding.weight"].shape
    embed_dim = state["visual.proj"].shape[1]
    if state["text_projection"].shape[1] != embed_dim:
        raise ScorerError(
            f"text_projection {tuple(state['text_projection'].shape)} and visual.proj "
            f"{tuple(state['visual.proj'].shape)} project to different widths"
        )
    ids = dict(tokenizer_ids or {})
    return CLIPConfig(
        text_config=dict(
            vocab_size=vocab_size,
            hidden_size=text_width,
            intermediate_size=state["transformer.resblocks.0.mlp.c_fc.weight"].shape[0],
            num_hidden_layers=depth("transformer.resblocks."),
            num_attention_heads=_heads(text_width, text_heads, 64, "text"),
            max_position_embeddings=state["positional_embedding"].shape[0],
            hidden_act=act,
            bos_token_id=ids.get("bos_token_id", vocab_size - 2),
            eos_token_id=ids.get("eos_token_id", vocab_size - 1),
            pad_token_id=ids.get("pad_token_id", 0),
        ),
        vision_config=dict(
            hidden_size=vision_width,
            intermediate_size=state["visual.transformer.resblocks.0.mlp.c_fc.weight"].shape[0],
            num_hidden_layers=depth("visual.transformer.resblocks."),
            num_attention_heads=_heads(vision_width, vision_heads, _VISION_HEAD_WIDTHS.get(vision_width, 64), "vision"),
            image_size=grid * patch,
            patch_size=patch,
            hidden_act=act,
        ),
        projection_dim=embed_dim,
    )


def open_clip_to_transformers(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename open_clip keys to ``CLIPModel`` keys; split ``in_proj`` into q/k/v; transpose projections."""
    converted: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key in _IGNORED:
            continue
        if key in _TOP:
            converted[_TOP[key]] = value
        elif key == "visual.proj":
            converted["visual_projection.weight"] = value.t().contiguous()
        elif key == "text_projection":
            converted["text_projection.weight"] = value.t().contiguous()
        elif match := _BLOCK.match(key):
            tower = "vision_model" if match.group(1) else "text_model"
            prefix = f"{tower}.encoder.layers.{match.group(2)}."
            part = match.group(3)
            if part in ("attn.in_proj_weight", "attn.in_proj_bias"):
                suffix = "weight" if part.endswith("weight") else "bias"
                for name, chunk in zip(("q", "k", "v"), value.chunk(3, dim=0), strict=True):
                    converted[f"{prefix}self_attn.{name}_proj.{suffix}"] = chunk.contiguous()
            elif part in _BLOCK_PARTS:
                converted[prefix + _BLOCK_PARTS[part]] = value
            else:
                raise ScorerError(f"unsupported open_clip key {key!r} (layer scale or a custom block?)")
        else:
            raise ScorerError(f"unsupported open_clip key {key!r}; expected a plain open_clip CLIP state dict")
    return converted


def clip_model_from_open_clip(
    state: Mapping[str, torch.Tensor],
    vision_heads: int | None = None,
    text_heads: int | None = None,
    act: str = "gelu",
    tokenizer_ids: Mapping[str, int] | None = None,
) -> Any:
    """A transformers ``CLIPModel`` (eval mode) holding an open_clip state dict's weights."""
    from transformers import CLIPModel

    config = clip_config_from_open_clip(state, vision_heads, text_heads, act, tokenizer_ids)
    model = CLIPModel(config)
    converted = open_clip_to_transformers(state)
    expected = model.state_dict()
    for key, value in converted.items():
        if key in expected and tuple(expected[key].shape) != tuple(value.shape):
            raise ScorerError(
                f"converted {key} has shape {tuple(value.shape)}, the model expects {tuple(expected[key].shape)}"
            )
    result = model.load_state_dict(converted, strict=False)
    missing_keys = [k for k in result.missing_keys if not k.endswith("position_ids")]
    if missing_keys or result.unexpected_keys:
        raise ScorerError(
            f"open_clip checkpoint does not fill a CLIPModel: missing {missing_keys[:5]}, "
            f"unexpected {list(result.unexpected_keys)[:5]}"
        )
    return model.eval()


class HpsScorer(BatchedScorer):
    """``100 * cos(image_embeds, text_embeds)`` with an HPS-tuned CLIP."""

    def __init__(self, embedder: ClipEmbedder, name: str = "hpsv2", batch_size: int = 16) -> None:
        self.embedder = embedder
        self.name = name
        self.batch_size = batch_size

    def score_batch(self, images: Sequence[Image.Image], prompts: Sequence[str]) -> torch.Tensor:
        return 100.0 * self.embedder.cosine(images, prompts)


def load_hps(
    path: Path,
    device: str | torch.device = "cpu",
    processor: Path | None = None,
    vision_heads: int | None = None,
    text_heads: int | None = None,
    act: str = "gelu",
    name: str = "hpsv2",
) -> HpsScorer:
    """HPS from an open_clip checkpoint file; the processor from ``processor`` or ``processor/`` beside it."""

    if act not in ("gelu", "quick_gelu"):
        raise ScorerError(f"act={act!r}: expected gelu (LAION ViT-H-14) or quick_gelu (OpenAI)")
    if not path.is_file():
        raise missing("HPS checkpoint", path, HPS_PUBLISHED)
    processor_dir = processor or path.parent / "processor"
    clip_processor = load_clip_processor(processor_dir, HPS_PUBLISHED)
    checkpoint = load_tensors(path, "HPS checkpoint")
    tokenizer = clip_processor.tokenizer
    ids = {
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0,
    }
    model = clip_model_from_open_clip(unwrap_state_dict(checkpoint), vision_heads, text_heads, act, ids)
    return HpsScorer(ClipEmbedder(model.to(device), clip_processor, device), name=name)


def _load_hps_spec(spec: ScorerSpec, device: str | torch.device, name: str) -> HpsScorer:
    return load_hps(
        spec.expanded_path(),
        device,
        processor=spec.path_option("processor"),
        vision_heads=spec.int_option("vision_heads"),
        text_heads=spec.int_option("text_heads"),
        act=spec.options.get("act", "gelu"),
        name=name,
    )


HPSV2 = ScorerKind("hpsv2", _load_hps_spec, options=("processor", "vision_heads", "text_heads", "act"))
"""``hpsv2:FILE[,processor=DIR][,vision_heads=N][,text_heads=N][,act=gelu|quick_gelu]``."""
