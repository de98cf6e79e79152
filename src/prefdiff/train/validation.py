"""Validation images for fixed prompts and seeds, written into the run directory."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

import torch

from prefdiff.models.base import Backbone, Denoiser


@torch.no_grad()
def generate_images(
    backbone: Backbone,
    denoiser: Denoiser,
    prompts: list[str],
    seeds: list[int],
    out_dir: Path,
    resolution: int,
    steps: int = 25,
    guidance_scale: float = 5.0,
    autocast: Callable[[], AbstractContextManager] = nullcontext,
) -> list[Path]:
    """One PNG per (prompt, seed): ``{prompt_index:02d}_seed{seed}.png``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    pipe = backbone.pipeline(denoiser=denoiser)
    pipe.set_progress_bar_config(disable=True)
    was_training = denoiser.training
    denoiser.eval()
    written = []
    try:
        for p_index, prompt in enumerate(prompts):
            for seed in seeds:
                generator = torch.Generator(device="cpu").manual_seed(seed)
                # under mixed precision the prepared denoiser returns fp32 while the VAE holds
                # bf16/fp16 weights: autocast makes the decode take either
                with autocast():
                    image = pipe(
                        prompt,
                        num_inference_steps=steps,
                        guidance_scale=guidance_scale,
                        height=resolution,
                        width=resolution,
                        generator=generator,
                    ).images[0]
                path = out_dir / f"{p_index:02d}_seed{seed}.png"
                image.save(path)
                written.append(path)
    finally:
        denoiser.train(was_training)
    return written
