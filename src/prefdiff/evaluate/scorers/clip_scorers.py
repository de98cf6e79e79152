"""PickScore and CLIP score: a transformers ``CLIPModel`` directory and its processor.

- PickScore (Kirstain et al., 2023): ``logit_scale.exp() * cos(image, prompt)``.
- CLIP score (Hessel et al., 2021; torchmetrics' convention): ``100 * max(cos(image, prompt), 0)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from prefdiff.evaluate.scorers.base import (
    BatchedScorer,
    ClipEmbedder,
    load_clip_model,
    load_clip_processor,
)
from prefdiff.evaluate.scorers.spec import ScorerKind, ScorerSpec

if TYPE_CHECKING:
    import torch
    from PIL import Image

PICKSCORE_PUBLISHED = (
    "https://huggingface.co/yuvalkirstain/PickScore_v1 (model) with the processor of "
    "https://huggingface.co/laion/CLIP-ViT-H-14-laion2B-s32B-b79K"
)
CLIP_PUBLISHED = (
    "https://huggingface.co/openai/clip-vit-large-patch14 (or any transformers CLIPModel directory with its processor)"
)


class PickScoreScorer(BatchedScorer):
    """``logit_scale.exp() * cos(image_embeds, text_embeds)`` (about 20-23 for real images)."""

    def __init__(self, embedder: ClipEmbedder, name: str = "pickscore", batch_size: int = 16) -> None:
        self.embedder = embedder
        self.name = name
        self.batch_size = batch_size

    def score_batch(self, images: Sequence[Image.Image], prompts: Sequence[str]) -> torch.Tensor:
        return self.embedder.model.logit_scale.exp() * self.embedder.cosine(images, prompts)


class ClipScorer(BatchedScorer):
    """``100 * max(cos(image_embeds, text_embeds), 0)``."""

    def __init__(self, embedder: ClipEmbedder, name: str = "clip", batch_size: int = 16) -> None:
        self.embedder = embedder
        self.name = name
        self.batch_size = batch_size

    def score_batch(self, images: Sequence[Image.Image], prompts: Sequence[str]) -> torch.Tensor:
        return 100.0 * self.embedder.cosine(images, prompts).clamp_min(0.0)


def _embedder(directory: Path, processor: Path | None, device: str | torch.device, published: str) -> ClipEmbedder:
    model = load_clip_model(directory, device, published)
    return ClipEmbedder(model, load_clip_processor(processor or directory, published), device)


def load_pickscore(
    directory: Path, device: str | torch.device = "cpu", processor: Path | None = None, name: str = "pickscore"
) -> PickScoreScorer:
    """PickScore from a ``CLIPModel`` directory; the processor from ``processor`` or the same directory."""
    return PickScoreScorer(_embedder(directory, processor, device, PICKSCORE_PUBLISHED), name=name)


def load_clip_score(
    directory: Path, device: str | torch.device = "cpu", processor: Path | None = None, name: str = "clip"
) -> ClipScorer:
    """CLIP score from a ``CLIPModel`` directory; the processor from ``processor`` or the same directory."""
    return ClipScorer(_embedder(directory, processor, device, CLIP_PUBLISHED), name=name)


def _load_pickscore_spec(spec: ScorerSpec, device: str | torch.device, name: str) -> PickScoreScorer:
    return load_pickscore(spec.expanded_path(), device, processor=spec.path_option("processor"), name=name)


def _load_clip_score_spec(spec: ScorerSpec, device: str | torch.device, name: str) -> ClipScorer:
    return load_clip_score(spec.expanded_path(), device, processor=spec.path_option("processor"), name=name)


PICKSCORE = ScorerKind("pickscore", _load_pickscore_spec, options=("processor",))
"""``pickscore:DIR[,processor=DIR]``."""
CLIP_SCORE = ScorerKind("clip", _load_clip_score_spec, options=("processor",))
"""``clip:DIR[,processor=DIR]``."""
