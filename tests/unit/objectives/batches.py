"""Cached-style batches for step-level objective tests: latents and prompt conditioning given
directly, so the step runs no VAE."""

from __future__ import annotations

import torch

from prefdiff.data.batch import LatentStats, PairBatch


def cached_pairs(backbone, prompts: list[str]) -> PairBatch:
    """One pair per prompt (slots 0..P-1), winners preferred, random winner and loser latents."""
    shape = (len(prompts), 4, 4, 4)
    return PairBatch(
        slots=list(range(len(prompts))),
        labels=torch.ones(len(prompts)),
        original_size=torch.full((2 * len(prompts), 2), 32),
        crop_top_left=torch.zeros(2 * len(prompts), 2),
        prompt_cond=backbone.encode_prompts(prompts),
        winner_latents=LatentStats(torch.randn(shape), torch.zeros(shape)),
        loser_latents=LatentStats(torch.randn(shape), torch.zeros(shape)),
    )


def cached_images(backbone, slots: list[int], prompts: list[str], mismatched: list[str], labels=None) -> PairBatch:
    """Single labelled images (KTO's batches): ``labels`` (default: slot parity, odd slots
    desirable), latents seeded by the slots, and each image's mismatched prompt."""
    shape = (len(slots), 4, 4, 4)
    gen = torch.Generator().manual_seed(sum(slots))
    return PairBatch(
        slots=slots,
        labels=torch.tensor(labels if labels is not None else [float(s % 2) for s in slots]),
        original_size=torch.full((len(slots), 2), 32),
        crop_top_left=torch.zeros(len(slots), 2),
        prompt_cond=backbone.encode_prompts(prompts),
        winner_latents=LatentStats(torch.randn(shape, generator=gen), torch.zeros(shape)),
        unpaired=True,
        mismatched_prompt_cond=backbone.encode_prompts(mismatched),
    )
