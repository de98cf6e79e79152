"""`prefdiff toy pretrain`: build and pretrain the toy world's base pipeline from a seed.

Three stages, each seeded, on scenes drawn from :mod:`prefdiff.toy.world` with every
colour-shape combination (the held-out ones included, as a base model would have seen them):

1. a VAE (32 px RGB -> 8x8x4 latents, downsampling 4) trained to reconstruct the scenes;
2. the latents of a fixed pool of scenes, encoded once (posterior mean and std);
3. a UNet and a CLIP text encoder trained together on epsilon-prediction with 10% of captions
   dropped (for classifier-free guidance), with an exponential moving average kept and saved.

The result is an ordinary diffusers StableDiffusionPipeline directory. `evaluate_base` samples
it and reports how often the perceived colour and shape match the caption.
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

if TYPE_CHECKING:
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

from prefdiff.toy.world import (
    COLOURS,
    IMAGE_SIZE,
    SHAPES,
    caption_for,
    perceive,
    render,
    sample_scene,
)

TOKENIZER_LENGTH = 16  # "a purple triangle" is 5 tokens with BOS/EOS; 16 leaves room


@dataclass
class PretrainSettings:
    seed: int = 0
    pool: int = 24000  # scenes rendered once and reused by both stages
    vae_steps: int = 1200
    vae_batch: int = 32
    vae_lr: float = 2e-3
    unet_steps: int = 6000
    unet_batch: int = 128
    unet_lr: float = 1e-3
    caption_dropout: float = 0.1
    ema_decay: float = 0.999
    eval_images_per_caption: int = 16  # samples per colour-shape caption in the final check
    eval_steps: int = 20
    check_images: int = 256  # scenes for the VAE round-trip check


def build_components(
    seed: int, out: Path
) -> tuple[CLIPTokenizer, CLIPTextModel, AutoencoderKL, UNet2DConditionModel, DDPMScheduler]:
    """Random-init tokenizer, text encoder, VAE, UNet and scheduler of the toy base pipeline."""
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    from prefdiff.models.tiny import (
        build_clip_tokenizer_files,
        clip_text_config,
        sd_noise_scheduler,
        small_vae,
        two_level_unet_kwargs,
    )

    torch.manual_seed(seed)
    build_clip_tokenizer_files(out / "tokenizer", max_length=TOKENIZER_LENGTH)
    tokenizer = CLIPTokenizer.from_pretrained(str(out / "tokenizer"))
    text_encoder = CLIPTextModel(clip_text_config(len(tokenizer), 64, 64))
    vae = small_vae((16, 32, 64), IMAGE_SIZE, mid_block_attention=False)
    unet = UNet2DConditionModel(cross_attention_dim=64, **two_level_unet_kwargs(IMAGE_SIZE // 4, norm_num_groups=16))
    scheduler = sd_noise_scheduler("epsilon")
    return tokenizer, text_encoder, vae, unet, scheduler


def render_pool(count: int, seed: int) -> tuple[torch.Tensor, list[str]]:
    """``count`` scenes as a uint8 tensor ``[count, 3, S, S]`` and their captions."""
    rng = random.Random(seed)
    images = np.empty((count, IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)
    captions = []
    for index in range(count):
        scene = sample_scene(rng)
        images[index] = np.asarray(render(scene))
        captions.append(scene.caption)
    return torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(), captions


def _to_unit(batch: torch.Tensor) -> torch.Tensor:
    return batch.float() / 127.5 - 1.0


def _cosine_lr(step: int, total: int, peak: float, warmup: int = 100) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return peak * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress)))


def train_vae(vae: AutoencoderKL, pool: torch.Tensor, settings: PretrainSettings, log: Callable[[str], None]) -> None:
    """Reconstruction (MSE + L1) with a tiny KL weight, as SD's VAE: latents stay informative."""
    from tqdm.auto import tqdm

    generator = torch.Generator().manual_seed(settings.seed + 1)
    optimizer = torch.optim.AdamW(vae.parameters(), lr=settings.vae_lr, weight_decay=0.0)
    vae.train()
    bar = tqdm(range(settings.vae_steps), desc="pretrain vae", unit="step")
    for step in bar:
        for group in optimizer.param_groups:
            group["lr"] = _cosine_lr(step, settings.vae_steps, settings.vae_lr)
        index = torch.randint(0, len(pool), (settings.vae_batch,), generator=generator)
        images = _to_unit(pool[index])
        posterior = vae.encode(images).latent_dist
        latents = posterior.mean + posterior.std * torch.randn(posterior.mean.shape, generator=generator)
        reconstruction = vae.decode(latents).sample
        loss = torch.nn.functional.mse_loss(reconstruction, images) + 0.1 * (reconstruction - images).abs().mean()
        loss = loss + 1e-6 * posterior.kl().mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step % 50 == 0:
            bar.set_postfix(loss=f"{loss.item():.4f}")
    vae.eval()
    log(f"vae: final reconstruction loss {loss.item():.4f}")


@torch.no_grad()
def encode_pool(vae: AutoencoderKL, pool: torch.Tensor, batch: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    means, stds = [], []
    for start in range(0, len(pool), batch):
        posterior = vae.encode(_to_unit(pool[start : start + batch])).latent_dist
        means.append(posterior.mean)
        stds.append(posterior.std)
    return torch.cat(means), torch.cat(stds)


@torch.no_grad()
def reconstruction_match(vae: AutoencoderKL, count: int = 256, seed: int = 12345) -> dict[str, float]:
    """How often colour and shape survive a VAE round trip (perceived on the reconstruction)."""
    from PIL import Image

    rng = random.Random(seed)
    scenes = [sample_scene(rng) for _ in range(count)]
    images = torch.stack([torch.from_numpy(np.array(render(s))).permute(2, 0, 1) for s in scenes])
    decoded = vae.decode(vae.encode(_to_unit(images)).latent_dist.mean).sample
    pixels = ((decoded.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()
    seen = [perceive(Image.fromarray(p)) for p in pixels]
    return {
        "colour": sum(p.colour == s.colour for p, s in zip(seen, scenes, strict=True)) / count,
        "shape": sum(p.shape == s.shape for p, s in zip(seen, scenes, strict=True)) / count,
    }


def _encode_captions(tokenizer: CLIPTokenizer, text_encoder: CLIPTextModel, captions: list[str]) -> torch.Tensor:
    ids = tokenizer(
        captions, padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt"
    ).input_ids
    return text_encoder(ids)[0]


@dataclass
class DenoiserSchedule:
    """How every toy base's denoiser (UNet or transformer) trains: AdamW (weight decay 0.01),
    cosine lr with warm-up, gradients clipped at 1, ``caption_dropout`` of captions replaced by
    "" (for classifier-free guidance), an EMA with warm-up of its decay."""

    steps: int
    batch: int
    lr: float
    caption_dropout: float
    ema_decay: float
    seed: int
    name: str = "unet"


# the loss of one batch: (pool indices [B], captions of the batch (some dropped to ""), generator) -> scalar
BatchLoss = Callable[[torch.Tensor, list[str], torch.Generator], torch.Tensor]


def train_denoiser(
    modules: list[torch.nn.Module],
    batch_loss: BatchLoss,
    captions: list[str],
    schedule: DenoiserSchedule,
    log: Callable[[str], None],
) -> list[torch.nn.Module]:
    """Train ``modules`` on ``batch_loss`` over batches of the scene pool (``captions`` has one
    entry per pooled scene); returns their EMA copies, in order."""
    import copy

    from tqdm.auto import tqdm

    generator = torch.Generator().manual_seed(schedule.seed + 2)
    drop = random.Random(schedule.seed + 3)
    params: list[torch.Tensor] = [p for module in modules for p in module.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=schedule.lr, weight_decay=0.01)
    emas = [copy.deepcopy(module).eval() for module in modules]
    ema_params: list[torch.Tensor] = [
        p
        for ema, module in zip(emas, modules, strict=True)
        for p, q in zip(ema.parameters(), module.parameters(), strict=True)
        if q.requires_grad
    ]
    for module in modules:
        module.train()
    bar = tqdm(range(schedule.steps), desc=f"pretrain {schedule.name}", unit="step")
    running = None
    for step in bar:
        for group in optimizer.param_groups:
            group["lr"] = _cosine_lr(step, schedule.steps, schedule.lr)
        index = torch.randint(0, len(captions), (schedule.batch,), generator=generator)
        batch_captions = ["" if drop.random() < schedule.caption_dropout else captions[i] for i in index.tolist()]
        loss = batch_loss(index, batch_captions, generator)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        decay = min(schedule.ema_decay, (1 + step) / (10 + step))
        with torch.no_grad():
            torch._foreach_lerp_(ema_params, params, 1 - decay)
        running = loss.item() if running is None else 0.98 * running + 0.02 * loss.item()
        if step % 50 == 0:
            bar.set_postfix(loss=f"{running:.4f}")
    log(f"{schedule.name}: final smoothed loss {running:.4f}")
    return emas


def sample_latents(
    latents: tuple[torch.Tensor, torch.Tensor], index: torch.Tensor, generator: torch.Generator
) -> torch.Tensor:
    """A draw from the cached posteriors (mean and std ``[N, 4, h, w]``) of the scenes ``index [B]``:
    ``[B, 4, h, w]``, unscaled."""
    mean, std = latents
    return mean[index] + std[index] * torch.randn(mean[index].shape, generator=generator)


def train_unet(
    unet: UNet2DConditionModel,
    text_encoder: CLIPTextModel,
    tokenizer: CLIPTokenizer,
    scheduler: DDPMScheduler,
    latents: tuple[torch.Tensor, torch.Tensor],
    scaling: float,
    captions: list[str],
    settings: PretrainSettings,
    log: Callable[[str], None],
) -> tuple[UNet2DConditionModel, CLIPTextModel]:
    """Epsilon prediction on cached latents; returns EMA copies of the UNet and text encoder."""
    alphas = scheduler.alphas_cumprod

    def batch_loss(index: torch.Tensor, batch_captions: list[str], generator: torch.Generator) -> torch.Tensor:
        clean = sample_latents(latents, index, generator) * scaling
        noise = torch.randn(clean.shape, generator=generator)
        timesteps = torch.randint(0, len(alphas), (len(index),), generator=generator)
        a = alphas[timesteps].view(-1, 1, 1, 1)
        noisy = a.sqrt() * clean + (1 - a).sqrt() * noise
        prediction = unet(noisy, timesteps, _encode_captions(tokenizer, text_encoder, batch_captions)).sample
        return torch.nn.functional.mse_loss(prediction, noise)

    schedule = DenoiserSchedule(
        settings.unet_steps,
        settings.unet_batch,
        settings.unet_lr,
        settings.caption_dropout,
        settings.ema_decay,
        settings.seed,
    )
    ema_unet, ema_text = train_denoiser([unet, text_encoder], batch_loss, captions, schedule, log)
    return ema_unet, ema_text


def pretrain(out: Path, settings: PretrainSettings | None = None, log: Callable[[str], None] = print) -> dict:
    """Pretrain the toy base pipeline into ``out`` (a diffusers directory); returns the report."""
    from diffusers import StableDiffusionPipeline

    settings = settings or PretrainSettings()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(settings.seed)
    seconds: dict[str, float] = {}
    start = time.perf_counter()
    tokenizer, text_encoder, vae, unet, scheduler = build_components(settings.seed, out)
    pool, captions = render_pool(settings.pool, settings.seed)
    seconds["render"] = time.perf_counter() - start

    start = time.perf_counter()
    train_vae(vae, pool, settings, log)
    vae.requires_grad_(False)
    reconstruction = reconstruction_match(vae, settings.check_images)
    log(f"vae round trip: colour {reconstruction['colour']:.1%}, shape {reconstruction['shape']:.1%}")
    mean, std = encode_pool(vae, pool)
    scaling = float(1.0 / (mean + std * torch.randn_like(mean)).std())
    vae.register_to_config(scaling_factor=scaling)
    seconds["vae"] = time.perf_counter() - start

    start = time.perf_counter()
    ema_unet, ema_text = train_unet(
        unet, text_encoder, tokenizer, scheduler, (mean, std), scaling, captions, settings, log
    )
    seconds["unet"] = time.perf_counter() - start

    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=ema_text,
        tokenizer=tokenizer,
        unet=ema_unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(str(out))
    start = time.perf_counter()
    report = {"settings": asdict(settings), "vae_round_trip": reconstruction, "scaling_factor": scaling}
    report["samples"] = evaluate_base(out, settings.eval_images_per_caption, settings.eval_steps, log=log)
    seconds["evaluate"] = time.perf_counter() - start
    report["seconds"] = seconds
    (out / "pretrain_report.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def pretrain_family(
    family: str, out: Path, settings: dict[str, Any], log: Callable[[str], None] = print
) -> dict[str, Any]:
    """Pretrain the toy base of ``family`` (sd: :func:`pretrain`; sd3:
    :func:`prefdiff.toy.flowbase.pretrain_flow`) with ``settings`` over its settings' defaults;
    a setting the family does not have is an error that names it."""
    from prefdiff.errors import ConfigError
    from prefdiff.toy.flowbase import FlowPretrainSettings, pretrain_flow

    families: dict[str, tuple[type, Callable[..., dict[str, Any]]]] = {
        "sd": (PretrainSettings, pretrain),
        "sd3": (FlowPretrainSettings, pretrain_flow),
    }
    if family not in families:
        raise ConfigError(f"--family {family!r}: expected one of {', '.join(families)}")
    settings_class, run = families[family]
    known = {field.name for field in fields(settings_class)}
    for name in settings:
        if name not in known:
            raise ConfigError(f"--{name.replace('_', '-')} is not a setting of the {family} toy base")
    return run(out, settings_class(**settings), log=log)


def evaluate_base(
    model: Path,
    images_per_caption: int = 16,
    steps: int = 20,
    guidance_scale: float = 3.0,
    log: Callable[[str], None] = print,
) -> dict:
    """Sample every colour-shape caption and report how often the perceived colour and shape
    match, and how size and background spread (the world draws them uniformly)."""
    from prefdiff.evaluate.generate import load_generation_pipeline

    pipe, size, prompt_settings = load_generation_pipeline(Path(model))
    captions = [caption_for(c, s) for c in COLOURS for s in SHAPES]
    colour_hits = shape_hits = total = 0
    radii, levels = [], []
    for index, caption in enumerate(captions):
        generator = torch.Generator().manual_seed(index)
        images = pipe(
            [caption] * images_per_caption,
            num_inference_steps=steps,
            guidance_scale=guidance_scale,
            height=size,
            width=size,
            generator=generator,
            **prompt_settings,
        ).images
        colour, shape = caption.split()[1:]
        for image in images:
            seen = perceive(image)
            colour_hits += seen.colour == colour
            shape_hits += seen.shape == shape
            radii.append(seen.radius)
            levels.append(seen.background_level)
            total += 1
    result = {
        "colour_match": colour_hits / total,
        "shape_match": shape_hits / total,
        "radius_mean": float(np.mean(radii)),
        "radius_std": float(np.std(radii)),
        "background_mean": float(np.mean(levels)),
        "background_std": float(np.std(levels)),
        "images": total,
        "steps": steps,
        "guidance_scale": guidance_scale,
    }
    log(
        f"base samples: colour match {result['colour_match']:.1%}, shape match {result['shape_match']:.1%} over "
        f"{total} images"
    )
    return result
