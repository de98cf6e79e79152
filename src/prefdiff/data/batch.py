"""The batch that crosses from data/ to train/: one typed ``PairBatch``.

Both collates make it: the on-the-fly one (prompts and pixels) and the cached one (text
conditioning and VAE latent statistics). Backbones turn it into a denoising problem; nothing
downstream guesses what a batch holds from its keys.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

Conditioning = dict[str, torch.Tensor]


@dataclass
class LatentStats:
    """The VAE posterior of ``P`` images: ``mean [P,C,h,w]`` and ``std [P,C,h,w]`` (unscaled)."""

    mean: torch.Tensor
    std: torch.Tensor

    def to(self, device: torch.device | str) -> LatentStats:
        return LatentStats(self.mean.to(device), self.std.to(device))


@dataclass
class PairBatch:
    """``P`` preference pairs, winner first.

    - ``slots``: the pairs' positions in the data stream (``P`` ints); every random draw of a
      pair (noise, timestep, crop, flip) is keyed by its slot.
    - ``labels [P]``: the probability that the first image is preferred; 1.0 for a hard label
      (the first image won). Soft labels (vote fractions) fit the same field.
    - ``original_size [2P, 2]`` and ``crop_top_left [2P, 2]``: per-image micro-conditioning
      (height, width and top, left in pixels), laid out ``[winners; losers]``.
    - text: ``prompts`` (``P`` strings, on the fly) or ``prompt_cond`` (cached conditioning,
      each tensor ``[P, ...]``), exactly one of them.
    - images: ``winner_pixels``/``loser_pixels [P,3,R,R]`` in [-1, 1] (on the fly) or
      ``winner_latents``/``loser_latents`` (cached :class:`LatentStats`), exactly one kind.

    An **unpaired** batch (``unpaired=True``, for objectives on per-image labels such as KTO)
    holds ``P`` single images in the winner fields and no losers; ``labels [P]`` is 1.0 for a
    desirable image and 0.0 for an undesirable one; ``original_size``/``crop_top_left`` are
    ``[P, 2]``. Each image also carries a *mismatched* prompt, another sample's
    (``mismatched_prompts``, or ``mismatched_prompt_cond`` when cached), for KTO's reference
    point; :meth:`mismatched` is the same images under those prompts.
    """

    slots: list[int]
    labels: torch.Tensor
    original_size: torch.Tensor
    crop_top_left: torch.Tensor
    prompts: list[str] | None = None
    prompt_cond: Conditioning | None = None
    winner_pixels: torch.Tensor | None = None
    loser_pixels: torch.Tensor | None = None
    winner_latents: LatentStats | None = None
    loser_latents: LatentStats | None = None
    unpaired: bool = False
    mismatched_prompts: list[str] | None = None
    mismatched_prompt_cond: Conditioning | None = None

    def __post_init__(self) -> None:
        if (self.prompts is None) == (self.prompt_cond is None):
            raise ValueError("a PairBatch holds either prompts or cached prompt conditioning")
        if (self.winner_pixels is None) == (self.winner_latents is None):
            raise ValueError("a PairBatch holds either pixels or cached latents")
        if self.unpaired and (self.loser_pixels is not None or self.loser_latents is not None):
            raise ValueError("an unpaired batch holds single images: no losers")

    def mismatched(self) -> PairBatch:
        """The same images (same slots, so the same noise and timesteps) under the mismatched
        prompts of an unpaired batch."""
        if self.mismatched_prompts is None and self.mismatched_prompt_cond is None:
            raise ValueError("this batch carries no mismatched prompts (only unpaired batches do)")
        if self.prompt_cond is not None:
            return dataclasses.replace(self, prompt_cond=self.mismatched_prompt_cond)
        return dataclasses.replace(self, prompts=self.mismatched_prompts)

    @property
    def num_pairs(self) -> int:
        return len(self.slots)

    @property
    def is_cached(self) -> bool:
        """Latents and text conditioning come from the cache (no VAE, no text encoder)."""
        return self.winner_latents is not None

    def micro_conditioning(self, with_losers: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """``(original_size, crop_top_left)`` of ``[winners; losers]`` ``[2P, 2]``, or of the
        winners alone ``[P, 2]``."""
        count = self.num_pairs * (2 if with_losers else 1)
        return self.original_size[:count], self.crop_top_left[:count]
