"""`prefdiff toy pretrain --family sd3`: the toy world's rectified-flow base, an SD3-style pipeline.

A ``StableDiffusion3Pipeline`` directory with every component SD3 has, at toy size:

- the VAE of the shipped UNet base (32 px RGB -> ``[4, 8, 8]`` latents), reused as trained, with
  a ``shift_factor`` and ``scaling_factor`` measured on the scene pool so that latents are about
  zero-mean and unit-std, as SD3's VAE config holds them;
- two CLIP text encoders with projection, both initialised from the shipped base's trained CLIP
  encoder (each with its own seeded random projection), and a random-init two-layer T5 encoder;
  all three are frozen, as in SD3's training; prompts are 16 CLIP tokens (the UNet base's
  tokenizer) and ``T5_TOKENS`` T5 tokens (the T5 tokenizer's ``model_max_length``, which the
  sd3 backbone and the generator take as the prompt length);
- an ``SD3Transformer2DModel`` (MMDiT, patch 1: 64 image tokens and 16 + 8 text tokens) trained
  from scratch on the flow objective through :class:`prefdiff.models.sd3.SD3Backbone` itself:
  ``u`` from the logit-normal density, sigmas from the scheduler's table,
  ``x_t = (1 - sigma) x_0 + sigma noise``, target ``noise - x_0``;
- a ``FlowMatchEulerDiscreteScheduler`` with ``shift`` 1: the shift grows with the latent's
  size (SD3 uses 3 at 128 x 128 x 16) and this latent has 256 values.

The scene pool, caption dropout, EMA, cosine lr and the final check (:func:`evaluate_base`) are
those of the UNet base (:mod:`prefdiff.toy.pretrain`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from prefdiff.toy.pretrain import (
    DenoiserSchedule,
    encode_pool,
    evaluate_base,
    render_pool,
    sample_latents,
    train_denoiser,
)
from prefdiff.toy.world import IMAGE_SIZE

SHIPPED_UNET_BASE = Path(__file__).parent / "assets" / "base"
T5_TOKENS = 8  # T5 prompt length: every caption is 4 T5 tokens (the CLIP tokenizer's 16 are the UNet base's)
T5_WIDTH = 128  # SD3 pads the two CLIP states (64 + 64 wide) to T5's width, so it must be >= 128
HEAD_DIM = 16


@dataclass
class FlowPretrainSettings:
    seed: int = 0
    pool: int = 24000  # scenes rendered once and encoded once by the shipped VAE
    transformer_steps: int = 7000
    transformer_batch: int = 64
    transformer_lr: float = 1e-3
    caption_dropout: float = 0.1
    ema_decay: float = 0.999
    width: int = 64  # the transformer's inner width (heads of HEAD_DIM)
    layers: int = 4  # MMDiT blocks
    patch_size: int = 1  # latent pixels per token side: 8 x 8 latents are (8 / patch_size)^2 image tokens
    shift: float = 1.0  # the scheduler's static shift
    eval_images_per_caption: int = 16
    eval_steps: int = 20
    source: str = ""  # the UNet base whose VAE, tokenizer and CLIP encoder are reused; empty: the shipped one


def _clip_with_projection(source: Path) -> Any:
    """A ``CLIPTextModelWithProjection`` holding ``source``'s trained CLIPTextModel weights and
    a random projection (64 -> 64) drawn from the global RNG."""
    from safetensors.torch import load_file
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    config = CLIPTextConfig.from_pretrained(str(source / "text_encoder"))
    encoder = CLIPTextModelWithProjection(config)
    weights = load_file(str(source / "text_encoder" / "model.safetensors"))
    encoder.text_model.load_state_dict({k.removeprefix("text_model."): v for k, v in weights.items()})
    return encoder.eval()


def build_flow_components(settings: FlowPretrainSettings, source: Path) -> dict[str, Any]:
    """The pipeline's components (the transformer random-init), built in a fixed order from
    ``settings.seed``; the VAE is ``source``'s, not yet given its shift and scale."""
    from diffusers import AutoencoderKL, SD3Transformer2DModel
    from transformers import CLIPTokenizer, T5EncoderModel

    from prefdiff.models.tiny import build_t5_tokenizer, flow_scheduler, t5_encoder_config

    torch.manual_seed(settings.seed)
    tokenizer = CLIPTokenizer.from_pretrained(str(source / "tokenizer"))
    t5_tokenizer = build_t5_tokenizer(max_length=T5_TOKENS)
    text_encoder, text_encoder_2 = _clip_with_projection(source), _clip_with_projection(source)
    clip_width = text_encoder.config.hidden_size + text_encoder_2.config.hidden_size
    transformer = SD3Transformer2DModel(
        sample_size=IMAGE_SIZE // 4,
        patch_size=settings.patch_size,
        in_channels=4,
        out_channels=4,
        num_layers=settings.layers,
        attention_head_dim=HEAD_DIM,
        num_attention_heads=settings.width // HEAD_DIM,
        joint_attention_dim=T5_WIDTH,
        caption_projection_dim=settings.width,
        pooled_projection_dim=text_encoder.config.projection_dim + text_encoder_2.config.projection_dim,
        pos_embed_max_size=IMAGE_SIZE // 4,
    )
    if clip_width > T5_WIDTH:
        raise ValueError(f"the CLIP states ({clip_width} wide) must fit T5's width {T5_WIDTH}")
    return {
        "transformer": transformer,
        "vae": AutoencoderKL.from_pretrained(str(source / "vae")).eval(),
        "noise_scheduler": flow_scheduler(shift=settings.shift),
        "text_encoder": text_encoder,
        "text_encoder_2": text_encoder_2,
        "text_encoder_3": T5EncoderModel(t5_encoder_config(len(t5_tokenizer), T5_WIDTH)).eval(),
        "tokenizer": tokenizer,
        "tokenizer_2": tokenizer,
        "tokenizer_3": t5_tokenizer,
    }


def latent_normalisation(latents: tuple[torch.Tensor, torch.Tensor], seed: int) -> tuple[float, float]:
    """SD3's ``shift_factor`` and ``scaling_factor`` for the pooled posteriors (mean and std
    ``[N, 4, h, w]``): the mean and the inverse std of one draw from each."""
    generator = torch.Generator().manual_seed(seed)
    draw = sample_latents(latents, torch.arange(len(latents[0])), generator)
    return float(draw.mean()), float(1.0 / draw.std())


def pretrain_flow(
    out: Path, settings: FlowPretrainSettings | None = None, log: Callable[[str], None] = print
) -> dict[str, Any]:
    """Pretrain the toy flow base into ``out`` (a StableDiffusion3Pipeline directory); returns the report."""
    from diffusers import StableDiffusion3Pipeline

    from prefdiff.models.sd3 import SD3Backbone

    settings = settings or FlowPretrainSettings()
    source = Path(settings.source) if settings.source else SHIPPED_UNET_BASE
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    seconds: dict[str, float] = {}
    start = time.perf_counter()
    components = build_flow_components(settings, source)
    pool, captions = render_pool(settings.pool, settings.seed)
    seconds["render"] = time.perf_counter() - start

    start = time.perf_counter()
    vae = components["vae"]
    latents = encode_pool(vae, pool)
    shift, scaling = latent_normalisation(latents, settings.seed + 1)
    vae.register_to_config(shift_factor=shift, scaling_factor=scaling)
    backbone = SD3Backbone(out, components)  # the training code's own noising, sigmas and prompt encoding
    prompts = sorted(set(captions)) + [""]
    conditioning = backbone.encode_prompts(prompts)  # frozen encoders: one row per distinct prompt
    row = {prompt: index for index, prompt in enumerate(prompts)}
    seconds["encode"] = time.perf_counter() - start

    transformer = components["transformer"]
    channels, height, width = latents[0].shape[1:]
    latent_shape = (int(channels), int(height), int(width))

    def batch_loss(index: torch.Tensor, batch_captions: list[str], generator: torch.Generator) -> torch.Tensor:
        from diffusers.training_utils import compute_density_for_timestep_sampling

        clean = (sample_latents(latents, index, generator) - shift) * scaling
        noise = torch.randn(clean.shape, generator=generator)
        options = backbone.options
        u = compute_density_for_timestep_sampling(
            options.timestep_sampling, len(index), options.logit_mean, options.logit_std, generator=generator
        )
        timesteps = backbone.sigmas_for(u, latent_shape) * backbone.num_train_timesteps
        noisy, target = backbone.noisy_input_and_target(clean, noise, timesteps)
        rows = torch.tensor([row[c] for c in batch_captions])
        prediction = transformer(
            hidden_states=noisy,
            timestep=timesteps,
            encoder_hidden_states=conditioning["encoder_hidden_states"][rows],
            pooled_projections=conditioning["pooled_projections"][rows],
            return_dict=False,
        )[0]
        return torch.nn.functional.mse_loss(prediction, target)

    start = time.perf_counter()
    schedule = DenoiserSchedule(
        settings.transformer_steps,
        settings.transformer_batch,
        settings.transformer_lr,
        settings.caption_dropout,
        settings.ema_decay,
        settings.seed,
        name="transformer",
    )
    (ema_transformer,) = train_denoiser([transformer], batch_loss, captions, schedule, log)
    seconds["transformer"] = time.perf_counter() - start

    parts = {name: components[name] for name in SD3Backbone.text_components}
    pipe = StableDiffusion3Pipeline(
        transformer=ema_transformer, scheduler=components["noise_scheduler"], vae=vae, **parts
    )
    pipe.save_pretrained(str(out))
    start = time.perf_counter()
    report: dict[str, Any] = {
        "family": "sd3",
        "settings": asdict(settings),
        "reused_from": "the shipped UNet base" if not settings.source else str(source),
        "shift_factor": shift,
        "scaling_factor": scaling,
        "parameters": {"transformer": sum(p.numel() for p in ema_transformer.parameters())},
    }
    report["samples"] = evaluate_base(out, settings.eval_images_per_caption, settings.eval_steps, log=log)
    seconds["evaluate"] = time.perf_counter() - start
    report["seconds"] = seconds
    (out / "pretrain_report.json").write_text(json.dumps(report, indent=2) + "\n")
    return report
