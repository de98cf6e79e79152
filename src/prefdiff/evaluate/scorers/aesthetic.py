"""LAION aesthetic predictor v2: an MLP over L2-normalised CLIP ViT-L/14 image embeddings.

The state dict (``sac+logos+ava1-l14-linearMSE.pth``) holds ``layers.{0,2,4,6,7}.{weight,bias}``
of ``Linear(D,1024) Dropout Linear(1024,128) Dropout Linear(128,64) Dropout Linear(64,16)
Linear(16,1)``; ``D`` (768 for ViT-L/14) is read from ``layers.0.weight`` and must equal the CLIP
model's projection width. The prompt is ignored. Score: the MLP output (about 1-10).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prefdiff.evaluate.scorers.base import (
    BatchedScorer,
    ClipEmbedder,
    ScorerError,
    load_clip_model,
    load_clip_processor,
    load_tensors,
    missing,
    normalise,
)
from prefdiff.evaluate.scorers.spec import ScorerKind, ScorerSpec

if TYPE_CHECKING:
    import torch
    from PIL import Image

AESTHETIC_PUBLISHED = (
    "https://github.com/christophschuhmann/improved-aesthetic-predictor "
    "(sac+logos+ava1-l14-linearMSE.pth); its CLIP: https://huggingface.co/openai/clip-vit-large-patch14"
)
HIDDEN_WIDTHS = (1024, 128, 64, 16, 1)
_LINEAR_INDICES = (0, 2, 4, 6, 7)


def build_mlp(input_width: int) -> torch.nn.Sequential:
    """The predictor's MLP; dropout is inert in eval mode but keeps the key indices."""
    from torch import nn

    widths = (input_width, *HIDDEN_WIDTHS)
    return nn.Sequential(
        nn.Linear(widths[0], widths[1]),
        nn.Dropout(0.2),
        nn.Linear(widths[1], widths[2]),
        nn.Dropout(0.2),
        nn.Linear(widths[2], widths[3]),
        nn.Dropout(0.1),
        nn.Linear(widths[3], widths[4]),
        nn.Linear(widths[4], widths[5]),
    )


def expected_shapes(input_width: int) -> dict[str, tuple[int, ...]]:
    """``layers.N.weight``/``bias`` -> shape, for an input width ``input_width``."""
    widths = (input_width, *HIDDEN_WIDTHS)
    shapes: dict[str, tuple[int, ...]] = {}
    for position, index in enumerate(_LINEAR_INDICES):
        shapes[f"layers.{index}.weight"] = (widths[position + 1], widths[position])
        shapes[f"layers.{index}.bias"] = (widths[position + 1],)
    return shapes


def load_mlp(state: Any, source: Path | str = "aesthetic weights") -> torch.nn.Sequential:
    """The MLP with ``state``'s weights; a missing key or a wrong shape names the key and shapes."""
    if isinstance(state, Mapping) and "state_dict" in state:
        state = state["state_dict"]
    if not isinstance(state, Mapping):
        raise ScorerError(f"{source}: expected a state dict of the aesthetic MLP, got {type(state).__name__}")
    state = {key.removeprefix("module."): value for key, value in state.items()}
    if "layers.0.weight" not in state:
        raise ScorerError(f"{source}: key 'layers.0.weight' is missing; not a LAION aesthetic predictor state dict")
    input_width = int(state["layers.0.weight"].shape[-1])
    expected = expected_shapes(input_width)
    for key, shape in expected.items():
        if key not in state:
            raise ScorerError(f"{source}: key {key!r} is missing (expected shape {shape})")
        if tuple(state[key].shape) != shape:
            raise ScorerError(f"{source}: key {key!r} has shape {tuple(state[key].shape)}, expected {shape}")
    extra = sorted(set(state) - set(expected))
    if extra:
        raise ScorerError(f"{source}: unexpected keys {extra[:5]} for the aesthetic MLP")
    mlp = build_mlp(input_width)
    mlp.load_state_dict({key.removeprefix("layers."): value for key, value in state.items()}, strict=True)
    return mlp.eval()


class AestheticScorer(BatchedScorer):
    """``MLP(normalise(clip_image_embeds))``; prompts are ignored."""

    def __init__(self, mlp: Any, embedder: ClipEmbedder, name: str = "aesthetic", batch_size: int = 16) -> None:
        self.mlp = mlp
        self.embedder = embedder
        self.name = name
        self.batch_size = batch_size

    def networks(self) -> list[torch.nn.Module]:
        return [self.embedder.model, self.mlp]

    def score_batch(self, images: Sequence[Image.Image], prompts: Sequence[str]) -> torch.Tensor:
        embeddings = normalise(self.embedder.image_embeddings(images))
        return self.mlp(embeddings.to(next(self.mlp.parameters()).dtype)).squeeze(-1)


def load_aesthetic(
    path: Path, device: str | torch.device = "cpu", clip: Path | None = None, name: str = "aesthetic"
) -> AestheticScorer:
    """The predictor from ``path``; its CLIP from ``clip`` or the ``clip/`` directory beside ``path``."""

    if not path.is_file():
        raise missing("aesthetic predictor weights", path, AESTHETIC_PUBLISHED)
    clip_dir = clip or path.parent / "clip"
    model = load_clip_model(clip_dir, device, AESTHETIC_PUBLISHED)
    embedder = ClipEmbedder(model, load_clip_processor(clip_dir, AESTHETIC_PUBLISHED), device)
    state = load_tensors(path, "aesthetic weights")
    mlp = load_mlp(state, path)
    width = int(model.config.projection_dim)
    if mlp[0].in_features != width:
        raise ScorerError(
            f"{path}: key 'layers.0.weight' takes {mlp[0].in_features}-wide embeddings but the CLIP "
            f"in {clip_dir} projects to {width} (the predictor expects CLIP ViT-L/14)"
        )
    return AestheticScorer(mlp.to(device), embedder, name=name)


def _load_aesthetic_spec(spec: ScorerSpec, device: str | torch.device, name: str) -> AestheticScorer:
    return load_aesthetic(spec.expanded_path(), device, clip=spec.path_option("clip"), name=name)


AESTHETIC = ScorerKind("aesthetic", _load_aesthetic_spec, options=("clip",))
"""``aesthetic:FILE[,clip=DIR]``."""
