"""The scorer interface, its error type, and the CLIP plumbing the model-based scorers share.

A scorer maps a batch of ``(image, prompt)`` pairs to one float each; higher is better. Every
model-based scorer runs under ``torch.no_grad`` in ``eval`` mode, in chunks of ``batch_size``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prefdiff.errors import PrefdiffError

if TYPE_CHECKING:
    import torch
    from PIL import Image


class ScorerError(PrefdiffError):
    """A scorer spec is malformed, its weights are missing, or they do not fit the model."""


class Scorer(ABC):
    """Scores ``(image, prompt)`` pairs; higher is better.

    ``name`` is the spec the scorer was loaded from (``pickscore:/models/pickscore``).
    """

    name: str = "scorer"

    @abstractmethod
    def score(self, images: Sequence[Image.Image], prompts: Sequence[str]) -> list[float]:
        """One score per pair; ``images[i]`` is scored against ``prompts[i]``."""

    def __call__(self, images: Sequence[Image.Image], prompts: Sequence[str]) -> list[float]:
        return self.score(images, prompts)

    def cast(self, dtype: torch.dtype) -> None:
        """Run in ``dtype`` (``torch.float16`` or ``bfloat16`` on a GPU). A scorer without
        networks of its own (a ``python:`` function) runs as written, which is this default."""
        del dtype  # nothing to convert

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


def check_batch(images: Sequence[Any], prompts: Sequence[str]) -> None:
    """Raise ``ScorerError`` unless there is exactly one prompt per image."""
    if len(images) != len(prompts):
        raise ScorerError(f"got {len(images)} images but {len(prompts)} prompts; need one prompt per image")


def chunks(n: int, size: int) -> Iterator[slice]:
    """Slices ``[0:size], [size:2*size], ...`` covering ``range(n)``."""
    for start in range(0, n, size):
        yield slice(start, min(start + size, n))


def missing(what: str, path: Path, published: str, hint: str = "") -> ScorerError:
    """The error for weights that are not where the user said: what, where, and where to get them."""
    message = f"{what} not found at {path}. The real weights are published at {published}."
    if hint:
        message += f" {hint}"
    return ScorerError(message)


def load_tensors(path: Path, what: str) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU, or a ScorerError naming ``what`` and the file."""
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several types for a damaged or foreign file
        raise ScorerError(
            f"cannot read the {what} {path} (loaded with torch.load(weights_only=True); "
            f"a file holding more than tensors must be re-saved as a plain state dict): {error}"
        ) from error


def features(output: Any) -> torch.Tensor:
    """The projected embeddings ``[B, D]`` from ``CLIPModel.get_*_features``.

    transformers 5 returns a ``BaseModelOutputWithPooling`` whose ``pooler_output`` holds them;
    older releases returned the tensor itself.
    """
    import torch

    if isinstance(output, torch.Tensor):
        return output
    return output.pooler_output


def normalise(embeddings: torch.Tensor) -> torch.Tensor:
    """Rows scaled to unit L2 norm, ``[B, D] -> [B, D]``."""
    return embeddings / embeddings.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def load_clip_processor(directory: Path, published: str) -> Any:
    """A ``CLIPProcessor`` (tokenizer + PIL image processor) saved in ``directory``."""
    from transformers import CLIPImageProcessorPil, CLIPProcessor, CLIPTokenizer

    if not directory.is_dir():
        raise missing("CLIP processor directory", directory, published)
    if not (directory / "preprocessor_config.json").is_file():
        raise missing(
            "CLIP image processor (preprocessor_config.json)",
            directory,
            published,
        )
    if not ((directory / "vocab.json").is_file() or (directory / "tokenizer.json").is_file()):
        raise missing("CLIP tokenizer (vocab.json/merges.txt or tokenizer.json)", directory, published)
    try:
        tokenizer = CLIPTokenizer.from_pretrained(str(directory))
        image_processor = CLIPImageProcessorPil.from_pretrained(str(directory))
    except (OSError, ValueError) as error:
        raise ScorerError(f"cannot load a CLIP processor from {directory}: {error}") from error
    return CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer)


def load_clip_model(directory: Path, device: str | torch.device, published: str) -> Any:
    """A transformers ``CLIPModel`` saved in ``directory``, in eval mode on ``device``."""
    from transformers import CLIPModel

    if not directory.is_dir():
        raise missing("CLIP model directory", directory, published)
    if not (directory / "config.json").is_file():
        raise missing("CLIP model (config.json + weights)", directory, published)
    try:
        model = CLIPModel.from_pretrained(str(directory))
    except (OSError, ValueError) as error:
        raise ScorerError(f"cannot load a CLIPModel from {directory}: {error}") from error
    return model.to(device).eval()


class BatchedScorer(Scorer):
    """A model-based scorer: ``score`` checks the batch, splits it into ``batch_size`` chunks
    and runs :meth:`score_batch` on each under ``no_grad``."""

    batch_size: int = 16
    embedder: ClipEmbedder

    def networks(self) -> list[torch.nn.Module]:
        """The modules :meth:`cast` converts: the CLIP model of ``self.embedder``."""
        return [self.embedder.model]

    def cast(self, dtype: torch.dtype) -> None:
        """Weights in ``dtype``; the inputs follow (:class:`ClipEmbedder` casts the pixels) and
        the scores come back as Python floats."""
        for network in self.networks():
            network.to(dtype)

    def score(self, images: Sequence[Image.Image], prompts: Sequence[str]) -> list[float]:
        import torch

        check_batch(images, prompts)
        scores: list[float] = []
        with torch.no_grad():
            for part in chunks(len(images), self.batch_size):
                scores += self.score_batch(images[part], prompts[part]).float().tolist()
        return scores

    @abstractmethod
    def score_batch(self, images: Sequence[Image.Image], prompts: Sequence[str]) -> torch.Tensor:
        """Scores ``[N]`` for one chunk."""


class ClipEmbedder:
    """A ``CLIPModel`` with its processor: images and prompts to projected embeddings ``[B, D]``,
    the pixels in the model's own precision."""

    def __init__(self, model: Any, processor: Any, device: str | torch.device) -> None:
        self.model = model
        self.processor = processor
        self.device = device
        self.max_length = int(model.config.text_config.max_position_embeddings)

    def image_embeddings(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """``[B, D]`` image embeddings (not normalised)."""
        pixels = self.processor.image_processor(images=[image.convert("RGB") for image in images], return_tensors="pt")[
            "pixel_values"
        ].to(self.device, self.model.dtype)
        return features(self.model.get_image_features(pixel_values=pixels))

    def text_embeddings(self, prompts: Sequence[str]) -> torch.Tensor:
        """``[B, D]`` text embeddings (not normalised); prompts are truncated to the context."""
        tokens = self.processor.tokenizer(
            list(prompts), padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        )
        return features(
            self.model.get_text_features(
                input_ids=tokens["input_ids"].to(self.device),
                attention_mask=tokens["attention_mask"].to(self.device),
            )
        )

    def cosine(self, images: Sequence[Image.Image], prompts: Sequence[str]) -> torch.Tensor:
        """``[B]`` cosine similarity of each image with its own prompt."""
        image = normalise(self.image_embeddings(images))
        text = normalise(self.text_embeddings(prompts))
        return (image * text).sum(dim=-1)
