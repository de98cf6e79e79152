"""The backbone seam: everything a model family knows, nothing about preferences.

A backbone loads a diffusers pipeline directory, encodes images and prompts, draws one noise
and one timestep per *pair* (shared by winner and loser), builds the noisy input and the target
(epsilon or v-prediction), runs a UNet and returns per-sample denoising errors ``[N]``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch

from prefdiff.errors import ModelLoadError

Conditioning = dict[str, torch.Tensor]

_MIX = 0x9E3779B97F4A7C15  # golden-ratio constant for mixing (seed, slot) into one generator seed


def pair_generator(seed: int, slot: int, stream: int = 0) -> torch.Generator:
    """A CPU generator unique to (run seed, data-stream slot, purpose).

    Keying randomness by the pair's slot in the data stream makes every draw independent of how
    pairs are split into micro-batches and processes: 1x8 accumulation, 8x1, and two processes
    of four all see the same noise for the same pair.
    """
    mixed = (seed * _MIX + slot * 1_000_003 + stream * 7919) % (2**63 - 1)
    return torch.Generator(device="cpu").manual_seed(mixed)


def read_model_index(path: Path) -> dict[str, Any]:
    """model_index.json of a pipeline directory, or a ModelLoadError saying what was found."""
    if not path.exists():
        raise ModelLoadError(f"model directory not found: {path}")
    if not path.is_dir():
        raise ModelLoadError(f"{path} is a file, not a diffusers pipeline directory")
    index_file = path / "model_index.json"
    if not index_file.is_file():
        found = sorted(p.name for p in path.iterdir())[:12]
        raise ModelLoadError(
            f"{path} is not a diffusers pipeline directory: no model_index.json "
            f"(found: {', '.join(found) or 'nothing'}). Save one with pipeline.save_pretrained(dir) "
            "or build a tiny one with `prefdiff make-tiny`."
        )
    try:
        return json.loads(index_file.read_text())
    except json.JSONDecodeError as err:
        raise ModelLoadError(f"{index_file}: not valid JSON ({err})") from None


@dataclass
class NoiseDraw:
    """One draw per pair: ``noise [P,C,h,w]``, ``timesteps [P]`` and latent-sampling noise for
    winner and loser ``[P,C,h,w]`` each (used when latents come from a distribution)."""

    noise: torch.Tensor
    timesteps: torch.Tensor
    latent_eps_w: torch.Tensor
    latent_eps_l: torch.Tensor


class Backbone:
    """Base class for a diffusers text-to-image family with a UNet and a VAE."""

    family: ClassVar[str] = ""
    pipeline_classes: ClassVar[tuple[str, ...]] = ()
    text_components: ClassVar[tuple[str, ...]] = ()

    def __init__(self, path: Path, components: dict[str, Any], prediction_type: str) -> None:
        self.path = path
        self.components = components
        self.unet = components["unet"]
        self.vae = components["vae"]
        self.noise_scheduler = components["noise_scheduler"]
        self.prediction_type = prediction_type
        self.scaling_factor: float = float(self.vae.config.scaling_factor)
        self.shift_factor: float = float(getattr(self.vae.config, "shift_factor", None) or 0.0)

    # ---------------------------------------------------------------- loading

    @classmethod
    def load(cls, path: Path, prediction_type: str | None = None) -> Backbone:
        """Load the components from a pipeline directory (fp32, on CPU)."""
        from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel

        for name in ("unet", "vae", "scheduler", *cls.text_components):
            if not (path / name).is_dir():
                raise ModelLoadError(f"{path}: pipeline directory lacks the '{name}' sub-folder")
        components: dict[str, Any] = {
            "unet": UNet2DConditionModel.from_pretrained(str(path), subfolder="unet"),
            "vae": AutoencoderKL.from_pretrained(str(path), subfolder="vae"),
            "noise_scheduler": DDPMScheduler.from_pretrained(str(path), subfolder="scheduler"),
        }
        components.update(cls._load_text_components(path))
        scheduler_type = components["noise_scheduler"].config.prediction_type
        chosen = prediction_type or scheduler_type
        if chosen not in ("epsilon", "v_prediction"):
            raise ModelLoadError(f"{path}/scheduler: prediction_type {chosen!r} is not supported (epsilon, v_prediction)")
        components["noise_scheduler"].register_to_config(prediction_type=chosen)
        for module in components.values():
            if isinstance(module, torch.nn.Module):
                module.requires_grad_(False)
        return cls(path, components, chosen)

    @classmethod
    def _load_text_components(cls, path: Path) -> dict[str, Any]:
        raise NotImplementedError

    def frozen_modules(self) -> list[torch.nn.Module]:
        """Modules that never train: the VAE and the text encoder(s)."""
        return [self.vae] + [self.components[name] for name in self.text_components if name.startswith("text_encoder")]

    def to(self, device: torch.device, dtype: torch.dtype | None = None) -> Backbone:
        """Move the frozen modules (VAE, text encoders) to ``device``/``dtype``; the UNet is the loop's."""
        for module in self.frozen_modules():
            target_dtype = dtype
            if module is self.vae and dtype == torch.float16 and getattr(self.vae.config, "force_upcast", False):
                target_dtype = torch.float32  # the SDXL VAE overflows in fp16
            if target_dtype in (None, torch.float32):
                module.to(device)
            else:
                module.to(device=device, dtype=target_dtype)
        return self

    # ---------------------------------------------------------------- encoding

    def encode_prompts(self, prompts: list[str]) -> Conditioning:
        """Text conditioning for ``P`` prompts (no grad)."""
        raise NotImplementedError

    @torch.no_grad()
    def latent_distribution(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """VAE posterior ``(mean, std)``, each ``[N,C,h,w]``, for ``pixels [N,3,H,W]`` in [-1, 1]."""
        vae_param = next(self.vae.parameters())
        dist = self.vae.encode(pixels.to(vae_param.device, vae_param.dtype)).latent_dist
        return dist.mean.float(), dist.std.float()

    def latents_from_distribution(self, mean: torch.Tensor, std: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """Sample ``mean + std * eps`` and scale into the UNet's latent space."""
        return (mean + std * eps.to(mean.device, mean.dtype) - self.shift_factor) * self.scaling_factor

    def latent_shape(self, resolution: int) -> tuple[int, int, int]:
        factor = 2 ** (len(self.vae.config.block_out_channels) - 1)
        return (int(self.vae.config.latent_channels), resolution // factor, resolution // factor)

    # ---------------------------------------------------------------- noise

    def draw_noise(self, slots: list[int], seed: int, latent_shape: tuple[int, int, int]) -> NoiseDraw:
        """One timestep and one noise draw per pair, keyed by the pair's data-stream slot."""
        num_train_timesteps = int(self.noise_scheduler.config.num_train_timesteps)
        noise, timesteps, eps_w, eps_l = [], [], [], []
        for slot in slots:
            gen = pair_generator(seed, slot)
            timesteps.append(torch.randint(0, num_train_timesteps, (1,), generator=gen))
            noise.append(torch.randn(latent_shape, generator=gen))
            eps_w.append(torch.randn(latent_shape, generator=gen))
            eps_l.append(torch.randn(latent_shape, generator=gen))
        return NoiseDraw(torch.stack(noise), torch.cat(timesteps), torch.stack(eps_w), torch.stack(eps_l))

    def noisy_input_and_target(
        self, latents: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``x_t = sqrt(a_t) x_0 + sqrt(1-a_t) eps`` and the target: ``eps`` or ``v``."""
        noisy = self.noise_scheduler.add_noise(latents, noise, timesteps)
        if self.prediction_type == "epsilon":
            return noisy, noise
        return noisy, self.noise_scheduler.get_velocity(latents, noise, timesteps)

    # ---------------------------------------------------------------- prediction

    def image_conditioning(self, prompt_cond: Conditioning, micro: dict[str, torch.Tensor], resolution: int) -> Conditioning:
        """Per-image conditioning for the stacked ``[winners; losers]`` batch ``[2P]`` (or winners
        only when ``micro`` holds only winners' sizes). Default: repeat the prompt conditioning."""
        repeats = micro["original_size"].shape[0] // next(iter(prompt_cond.values())).shape[0]
        return {k: v.repeat(repeats, *([1] * (v.dim() - 1))) for k, v in prompt_cond.items()}

    def predict(self, unet: torch.nn.Module, noisy: torch.Tensor, timesteps: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        raise NotImplementedError

    @staticmethod
    def per_sample_error(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """``[N]``: mean over C,H,W of ``(prediction - target)^2``, in fp32."""
        return (prediction.float() - target.float()).pow(2).mean(dim=(1, 2, 3))

    def denoising_errors(
        self,
        unet: torch.nn.Module,
        noisy: torch.Tensor,
        timesteps: torch.Tensor,
        cond: Conditioning,
        target: torch.Tensor,
    ) -> torch.Tensor:
        return self.per_sample_error(self.predict(unet, noisy, timesteps, cond), target)

    # ---------------------------------------------------------------- inference

    @staticmethod
    def pipeline_class() -> Any:
        """The diffusers pipeline class of this family."""
        raise NotImplementedError

    def pipeline(self, unet: torch.nn.Module | None = None) -> Any:
        """A diffusers pipeline over these components (optionally another UNet)."""
        raise NotImplementedError
