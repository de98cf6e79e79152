"""Generate PNGs from a pipeline directory, optionally with a LoRA or a fully tuned denoiser.

Two ways in: explicit prompts and seeds (``prefdiff generate --prompt ... --seed ...``), or a
benchmark prompt file (``--prompts FILE --images-per-prompt N``) where image ``i`` of prompt
``p`` gets the seed :func:`paired_seed` ``(base_seed, p, i)``: two models run on the same file
start from the same noise. Images already on disk are skipped (resume). Beside the images,
``manifest.jsonl`` holds one record per image: prompt, prompt_index, image_index, seed, file,
category, model, lora, unet (the tuned denoiser directory, UNet or transformer) and the sampler
settings (the format the label app reads).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from diffusers import DiffusionPipeline

from prefdiff.errors import ConfigError, ModelLoadError
from prefdiff.models import load_backbone

SCHEDULERS = {
    "default": None,
    "ddim": "DDIMScheduler",
    "euler": "EulerDiscreteScheduler",
    "euler_a": "EulerAncestralDiscreteScheduler",
    "dpmpp": "DPMSolverMultistepScheduler",
    "pndm": "PNDMScheduler",
}


@dataclass
class SamplerSettings:
    steps: int = 25
    guidance_scale: float = 5.0
    resolution: int | None = None
    negative_prompt: str | None = None
    scheduler: str = "default"


@dataclass
class Job:
    prompt: str
    prompt_index: int
    image_index: int
    seed: int
    file: str
    category: str | None = None


def paired_seed(base_seed: int, prompt_index: int, image_index: int) -> int:
    """A 31-bit seed for image ``image_index`` of prompt ``prompt_index``."""
    digest = hashlib.sha256(f"{base_seed}:{prompt_index}:{image_index}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


def load_generation_pipeline(
    model: Path, lora: Path | None = None, denoiser: Path | None = None, scheduler: str = "default"
) -> tuple[DiffusionPipeline, int, dict[str, Any]]:
    """A diffusers pipeline for ``model`` with ``lora`` loaded or its denoiser (UNet or
    transformer) replaced by the fully tuned one in ``denoiser``; returns the pipeline, its
    native resolution and the keyword arguments every call of it takes so that prompts are
    encoded as the latent cache encodes them (the T5 prompt length of the flow families)."""
    import diffusers

    if scheduler not in SCHEDULERS:
        raise ConfigError(f"--scheduler {scheduler!r}: expected one of {', '.join(SCHEDULERS)}")
    backbone = load_backbone(model)
    if scheduler != "default" and backbone.flow_matching:
        raise ConfigError(
            f"--scheduler {scheduler!r}: {backbone.family} pipelines sample a flow with their "
            "FlowMatchEulerDiscreteScheduler; the other samplers are for the UNet families (use 'default')"
        )
    tuned = None
    if denoiser is not None:
        if not (denoiser / "config.json").is_file():
            raise ModelLoadError(f"--denoiser {denoiser}: not a {backbone.denoiser_name} directory (no config.json)")
        tuned = backbone.load_denoiser(denoiser)
    pipe = backbone.pipeline(denoiser=tuned)
    scheduler_class = SCHEDULERS[scheduler]
    if scheduler_class is not None:
        pipe.scheduler = getattr(diffusers, scheduler_class).from_config(pipe.scheduler.config)
    if lora is not None:
        if not (lora / "pytorch_lora_weights.safetensors").is_file():
            raise ModelLoadError(f"--lora {lora}: no pytorch_lora_weights.safetensors in this directory")
        pipe.load_lora_weights(str(lora))
    pipe.set_progress_bar_config(disable=True)
    if torch.cuda.is_available():
        pipe.to("cuda")
    return pipe, backbone.native_resolution(), backbone.encoding_settings()


@torch.no_grad()
def run_jobs(
    jobs: list[Job],
    out: Path,
    model: Path,
    lora: Path | None,
    denoiser: Path | None,
    settings: SamplerSettings,
    batch_size: int = 4,
) -> list[Path]:
    """Generate the jobs whose file is missing, ``batch_size`` images per pipeline call, and
    write ``manifest.jsonl`` for all of them."""
    from tqdm.auto import tqdm

    out.mkdir(parents=True, exist_ok=True)
    todo = [job for job in jobs if not (out / job.file).exists()]
    size = settings.resolution
    if todo:
        pipe, native, prompt_settings = load_generation_pipeline(model, lora, denoiser, settings.scheduler)
        size = size or native
        for start in tqdm(
            range(0, len(todo), batch_size), desc="generate", unit="batch", disable=len(todo) <= batch_size
        ):
            batch = todo[start : start + batch_size]
            images = pipe(
                [job.prompt for job in batch],
                negative_prompt=[settings.negative_prompt] * len(batch) if settings.negative_prompt else None,
                num_inference_steps=settings.steps,
                guidance_scale=settings.guidance_scale,
                height=size,
                width=size,
                generator=[torch.Generator(device="cpu").manual_seed(job.seed) for job in batch],
                **prompt_settings,
            ).images
            for job, image in zip(batch, images, strict=True):
                image.save(out / job.file)
    common: dict[str, Any] = {
        "model": str(model),
        "lora": str(lora) if lora else None,
        "unet": str(denoiser) if denoiser else None,  # the tuned denoiser (UNet or transformer)
        **{k: v for k, v in asdict(settings).items() if k != "resolution"},
        "resolution": size,
    }
    with (out / "manifest.jsonl").open("w") as f:
        for job in jobs:
            f.write(json.dumps({**asdict(job), **common}) + "\n")
    return [out / job.file for job in jobs]


def generate_pngs(
    model: Path,
    prompts: list[str],
    seeds: list[int],
    out: Path,
    lora: Path | None = None,
    denoiser: Path | None = None,
    steps: int = 25,
    guidance_scale: float = 5.0,
    resolution: int | None = None,
    negative_prompt: str | None = None,
    scheduler: str = "default",
    batch_size: int = 4,
) -> list[Path]:
    """One PNG per (prompt, seed), named ``p{prompt_index:04d}_s{seed}.png``."""
    jobs = [
        Job(prompt, p, i, seed, f"p{p:04d}_s{seed}.png")
        for p, prompt in enumerate(prompts)
        for i, seed in enumerate(seeds)
    ]
    settings = SamplerSettings(steps, guidance_scale, resolution, negative_prompt, scheduler)
    return run_jobs(jobs, out, model, lora, denoiser, settings, batch_size)


def generate_prompt_set(
    model: Path,
    prompts_file: Path,
    images_per_prompt: int,
    out: Path,
    lora: Path | None = None,
    denoiser: Path | None = None,
    settings: SamplerSettings | None = None,
    base_seed: int = 0,
    batch_size: int = 4,
) -> list[Path]:
    """``images_per_prompt`` PNGs per prompt of ``prompts_file``, named ``p{p:05d}_i{i:03d}.png``,
    seeded by :func:`paired_seed`."""
    from prefdiff.evaluate.prompts import read_prompts

    if images_per_prompt < 1:
        raise ConfigError(f"--images-per-prompt must be >= 1 (got {images_per_prompt})")
    items = read_prompts(prompts_file)
    jobs = [
        Job(item.prompt, p, i, paired_seed(base_seed, p, i), f"p{p:05d}_i{i:03d}.png", item.category)
        for p, item in enumerate(items)
        for i in range(images_per_prompt)
    ]
    return run_jobs(jobs, out, model, lora, denoiser, settings or SamplerSettings(), batch_size)
