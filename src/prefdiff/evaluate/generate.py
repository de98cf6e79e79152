"""Generate PNGs from a pipeline directory, optionally with a LoRA or a tuned UNet.

Beside the images, ``manifest.jsonl`` holds one record per image: prompt, prompt_index,
image_index, seed, file, category, model, lora (the format the label app reads).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from prefdiff.errors import ModelLoadError
from prefdiff.models import load_backbone


def load_generation_pipeline(model: Path, lora: Path | None = None, unet: Path | None = None):
    """A diffusers pipeline for ``model`` with ``lora`` loaded or its UNet replaced by ``unet``."""
    backbone = load_backbone(model)
    tuned_unet = None
    if unet is not None:
        from diffusers import UNet2DConditionModel

        if not (unet / "config.json").is_file():
            raise ModelLoadError(f"--unet {unet}: not a UNet directory (no config.json)")
        tuned_unet = UNet2DConditionModel.from_pretrained(str(unet))
    pipe = backbone.pipeline(unet=tuned_unet)
    if lora is not None:
        weights = lora / "pytorch_lora_weights.safetensors"
        if not weights.is_file():
            raise ModelLoadError(f"--lora {lora}: no pytorch_lora_weights.safetensors in this directory")
        pipe.load_lora_weights(str(lora))
    pipe.set_progress_bar_config(disable=True)
    default_resolution = int(pipe.unet.config.sample_size) * backbone_scale(backbone)
    return pipe, default_resolution


def backbone_scale(backbone) -> int:
    return 2 ** (len(backbone.vae.config.block_out_channels) - 1)


@torch.no_grad()
def generate_pngs(
    model: Path,
    prompts: list[str],
    seeds: list[int],
    out: Path,
    lora: Path | None = None,
    unet: Path | None = None,
    steps: int = 25,
    guidance_scale: float = 5.0,
    resolution: int | None = None,
    negative_prompt: str | None = None,
) -> list[Path]:
    """One PNG per (prompt, seed), named ``p{prompt_index:04d}_s{seed}.png``."""
    from tqdm.auto import tqdm

    pipe, default_resolution = load_generation_pipeline(model, lora, unet)
    size = resolution or default_resolution
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    records = []
    jobs = [(p, prompt, i, seed) for p, prompt in enumerate(prompts) for i, seed in enumerate(seeds)]
    for prompt_index, prompt, image_index, seed in tqdm(jobs, desc="generate", disable=len(jobs) < 4):
        image = pipe(
            prompt,
            negative_prompt=negative_prompt,
            num_inference_steps=steps,
            guidance_scale=guidance_scale,
            height=size,
            width=size,
            generator=torch.Generator(device="cpu").manual_seed(seed),
        ).images[0]
        path = out / f"p{prompt_index:04d}_s{seed}.png"
        image.save(path)
        written.append(path)
        records.append(
            {
                "prompt": prompt,
                "prompt_index": prompt_index,
                "image_index": image_index,
                "seed": seed,
                "file": path.name,
                "category": None,
                "model": str(model),
                "lora": str(lora) if lora else None,
                "unet": str(unet) if unet else None,
                "steps": steps,
                "guidance_scale": guidance_scale,
                "resolution": size,
            }
        )
    with (out / "manifest.jsonl").open("w") as f:
        for record in records:
            f.write(json.dumps(record) + "\n")
    return written
