"""The backbone seam: everything a model family knows, nothing about preferences.

A backbone loads a diffusers pipeline directory, encodes images and prompts (for the cache),
turns a :class:`~prefdiff.data.batch.PairBatch` into one :class:`DenoisingProblem` with one
noise draw and one timestep per *pair* (shared by winner and loser), runs its ``denoiser`` (a
UNet or a transformer) and returns per-sample denoising errors ``[N]``. It also owns its LoRA
target modules and adapter format, and builds its generation pipeline.

Families register themselves in :data:`BACKBONES` (``@BACKBONES.register("sd")``); a pipeline
directory is matched to a family by the ``_class_name`` of its ``model_index.json``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypeAlias

import torch

from prefdiff.config import ModelConfig
from prefdiff.data.batch import Conditioning, LatentStats, PairBatch
from prefdiff.errors import ConfigError, ModelLoadError
from prefdiff.registry import Registry

# The trainable network of a family: a diffusers model (UNet2DConditionModel, SD3Transformer2DModel,
# FluxTransformer2DModel), that is a torch.nn.Module with a ``config``, ``save_pretrained`` and
# peft's ``add_adapter``. diffusers carries no type information mypy can use, so the alias is Any;
# its name says what is meant.
Denoiser: TypeAlias = Any

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
    winner and loser ``[P,C,h,w]`` each (latents are sampled from the VAE posterior)."""

    noise: torch.Tensor
    timesteps: torch.Tensor
    latent_eps_w: torch.Tensor
    latent_eps_l: torch.Tensor


@dataclass
class DenoisingProblem:
    """What the denoiser is asked for one micro-batch, ``N = 2P`` images ``[winners; losers]``
    (or ``N = P`` winners alone for objectives that never look at losers).

    ``noisy [N,C,h,w]`` and ``target [N,C,h,w]`` (epsilon, v or flow velocity), ``timesteps [N]``
    (the family's own units), ``conditioning`` (each tensor ``[N, ...]``) and an optional
    per-sample loss ``weight [N]``. Winner ``i`` and loser ``i`` share noise and timestep.
    """

    noisy: torch.Tensor
    target: torch.Tensor
    timesteps: torch.Tensor
    conditioning: Conditioning
    num_pairs: int
    weight: torch.Tensor | None = None
    slots: list[int] = field(default_factory=list)  # the pairs' data-stream slots (a cached reference reads by them)

    @property
    def has_losers(self) -> bool:
        return self.noisy.shape[0] == 2 * self.num_pairs

    def split(self, per_sample: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``[N]`` -> winners ``[P]`` and losers ``[P]`` (None when the problem has no losers)."""
        winners = per_sample[: self.num_pairs]
        return winners, per_sample[self.num_pairs :] if self.has_losers else None


def per_sample_error(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``[N]``: mean over C,H,W of ``(prediction - target)^2``, in fp32."""
    return (prediction.float() - target.float()).pow(2).mean(dim=(1, 2, 3))


def repeat_per_image(prompt_cond: Conditioning, repeats: int) -> Conditioning:
    """Prompt conditioning ``[P, ...]`` laid out for ``[winners; losers]`` ``[repeats*P, ...]``."""
    return {k: v.repeat(repeats, *([1] * (v.dim() - 1))) for k, v in prompt_cond.items()}


class Backbone:
    """Base class of a diffusers text-to-image family: a denoiser, a VAE, text encoders.

    A family sets the class attributes and implements ``_load_components``, ``encode_prompts``,
    ``timestep_and_noise``-level hooks (``draw_noise``, ``noisy_input_and_target``), ``predict``,
    ``pipeline`` and ``build_tiny``.
    """

    family: ClassVar[str] = ""
    pipeline_classes: ClassVar[tuple[str, ...]] = ()
    text_components: ClassVar[tuple[str, ...]] = ()
    denoiser_name: ClassVar[str] = "unet"  # the pipeline's sub-folder and attribute
    lora_target_modules: ClassVar[tuple[str, ...]] = ("to_q", "to_k", "to_v", "to_out.0")
    flow_matching: ClassVar[bool] = False  # a rectified-flow family (velocity target, sigmas in (0, 1])
    lora_legacy_keys: ClassVar[bool] = True  # the exported LoRA's key names (see save_lora_diffusers)

    def __init__(self, path: Path, components: dict[str, Any], options: ModelConfig | None = None) -> None:
        self.path = path
        self.options = options if options is not None else ModelConfig()
        self.components = components
        self.vae = components["vae"]
        self.noise_scheduler = components["noise_scheduler"]
        self.timestep_set: tuple[int, ...] | None = None  # train.timesteps: a discrete set to draw from
        self.scaling_factor: float = float(self.vae.config.scaling_factor)
        self.shift_factor: float = float(getattr(self.vae.config, "shift_factor", None) or 0.0)

    @property
    def denoiser(self) -> Denoiser:
        """The trainable network (UNet or transformer)."""
        return self.components[self.denoiser_name]

    @denoiser.setter
    def denoiser(self, module: Denoiser) -> None:
        self.components[self.denoiser_name] = module

    # ---------------------------------------------------------------- loading

    @classmethod
    def load(cls, path: Path, options: ModelConfig | None = None) -> Backbone:
        """Load the components from a pipeline directory (fp32, on CPU, frozen); ``options`` are
        the run's ``model.*`` keys (prediction type, noise-level density, T5 length, ...)."""
        options = options if options is not None else ModelConfig()
        if options.zero_terminal_snr and cls.flow_matching:
            raise ConfigError(
                f"config key 'model.zero_terminal_snr': {cls.family} is a flow family, whose schedule already ends "
                "in pure noise (sigma = 1); the rescaling is for the UNet families"
            )
        if options.timestep_spacing is not None and cls.flow_matching:
            raise ConfigError(
                f"config key 'model.timestep_spacing': {cls.family} samples its flow with its own sigmas; the "
                "spacing is for the UNet families"
            )
        for name in (cls.denoiser_name, "vae", "scheduler", *cls.text_components):
            if not (path / name).is_dir():
                raise ModelLoadError(f"{path}: pipeline directory lacks the '{name}' sub-folder")
        components = cls._load_components(path, options)
        for module in components.values():
            if isinstance(module, torch.nn.Module):
                module.requires_grad_(False)
        return cls(path, components, options)

    @classmethod
    def _load_components(cls, path: Path, options: ModelConfig) -> dict[str, Any]:
        """``{denoiser_name, "vae", "noise_scheduler", *text_components}`` from ``path``."""
        raise NotImplementedError

    @classmethod
    def denoiser_class(cls) -> Any:
        """The diffusers model class of the denoiser."""
        raise NotImplementedError

    def load_denoiser(self, directory: Path) -> Denoiser:
        """A fully fine-tuned denoiser saved by ``prefdiff train`` (``RUN/<denoiser_name>``)."""
        if not (directory / "config.json").is_file():
            raise ModelLoadError(f"{directory}: not a {self.denoiser_name} directory (no config.json)")
        return self.denoiser_class().from_pretrained(str(directory))

    def frozen_modules(self) -> list[torch.nn.Module]:
        """Modules that never train: the VAE and the text encoder(s)."""
        return [self.vae] + [self.components[name] for name in self.text_components if name.startswith("text_encoder")]

    def to(self, device: torch.device, dtype: torch.dtype | None = None) -> Backbone:
        """Move the frozen modules (VAE, text encoders) to ``device``/``dtype``; the denoiser is the loop's."""
        for module in self.frozen_modules():
            target_dtype = dtype
            if module is self.vae and dtype == torch.float16 and getattr(self.vae.config, "force_upcast", False):
                target_dtype = torch.float32  # the SDXL VAE overflows in fp16
            if dtype == torch.float16 and type(module).__name__ == "T5EncoderModel":
                target_dtype = torch.float32  # T5's activations overflow fp16 (its pipelines keep it in bf16 or fp32)
            if target_dtype in (None, torch.float32):
                module.to(device)
            else:
                module.to(device=device, dtype=target_dtype)
        return self

    def use_timesteps(self, timesteps: list[int] | None) -> None:
        """Draw training timesteps from ``timesteps`` only (``train.timesteps``; None: the full
        range). Families without a discrete schedule refuse a set."""
        if timesteps is not None:
            raise ConfigError(
                f"config key 'train.timesteps': {self.family} draws continuous noise levels; a discrete timestep "
                "set is for the UNet families (sd, sdxl)"
            )
        self.timestep_set = None

    # ---------------------------------------------------------------- encoding

    def encoding_settings(self) -> dict[str, Any]:
        """Settings besides the weights that change what ``encode_prompts`` returns (the T5
        prompt length of the flow families); a latent cache records them."""
        return {}

    def encode_prompts(self, prompts: list[str]) -> Conditioning:
        """Text conditioning for ``P`` prompts (no grad), each tensor ``[P, ...]``."""
        raise NotImplementedError

    @torch.no_grad()
    def latent_distribution(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """VAE posterior ``(mean, std)``, each ``[N,C,h,w]``, for ``pixels [N,3,H,W]`` in [-1, 1]."""
        vae_param = next(self.vae.parameters())
        dist = self.vae.encode(pixels.to(vae_param.device, vae_param.dtype)).latent_dist
        return dist.mean.float(), dist.std.float()

    def latents_from_distribution(self, mean: torch.Tensor, std: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """Sample ``mean + std * eps`` and scale into the denoiser's latent space."""
        return (mean + std * eps.to(mean.device, mean.dtype) - self.shift_factor) * self.scaling_factor

    def latent_shape(self, resolution: int) -> tuple[int, int, int]:
        factor = 2 ** (len(self.vae.config.block_out_channels) - 1)
        return (int(self.vae.config.latent_channels), resolution // factor, resolution // factor)

    def native_resolution(self) -> int:
        """The image size in pixels the denoiser was configured for."""
        factor = 2 ** (len(self.vae.config.block_out_channels) - 1)
        return int(self.denoiser.config.sample_size) * factor

    # ---------------------------------------------------------------- the denoising problem

    def draw_noise(self, slots: list[int], seed: int, latent_shape: tuple[int, int, int]) -> NoiseDraw:
        """One timestep and one noise draw per pair, keyed by the pair's data-stream slot."""
        raise NotImplementedError

    def noisy_input_and_target(
        self, latents: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The noisy input and the regression target for ``latents``, ``noise`` and ``timesteps``."""
        raise NotImplementedError

    def image_conditioning(
        self, prompt_cond: Conditioning, original_size: torch.Tensor, crop_top_left: torch.Tensor, resolution: int
    ) -> Conditioning:
        """Per-image conditioning for ``N`` images (``original_size [N, 2]`` tells how many):
        the prompt conditioning repeated for winners and losers. Families with
        micro-conditioning (SDXL) add theirs."""
        return repeat_per_image(prompt_cond, original_size.shape[0] // next(iter(prompt_cond.values())).shape[0])

    def _side_latents(self, batch: PairBatch, side: str, eps: torch.Tensor, device: torch.device) -> torch.Tensor:
        stats: LatentStats | None = getattr(batch, f"{side}_latents")
        if stats is None:
            mean, std = self.latent_distribution(getattr(batch, f"{side}_pixels").to(device))
        else:
            mean, std = stats.mean, stats.std
        return self.latents_from_distribution(mean.to(device), std.to(device), eps.to(device))

    def batch_latent_shape(self, batch: PairBatch, resolution: int) -> tuple[int, int, int]:
        if batch.winner_latents is not None:
            return tuple(batch.winner_latents.mean.shape[1:])  # type: ignore[return-value]
        return self.latent_shape(resolution)

    def denoising_problem(
        self, batch: PairBatch, seed: int, resolution: int, device: torch.device, with_losers: bool = True
    ) -> DenoisingProblem:
        """Latents, one noise draw and timestep per pair (keyed by slot), the noisy input, the
        target and the per-image conditioning of ``[winners; losers]`` (or winners alone)."""
        draw = self.draw_noise(batch.slots, seed, self.batch_latent_shape(batch, resolution))
        repeat = 2 if with_losers else 1
        with torch.no_grad():
            if batch.prompt_cond is not None:  # cached text conditioning
                prompt_cond = {k: v.to(device) for k, v in batch.prompt_cond.items()}
            else:
                prompt_cond = self.encode_prompts(batch.prompts or [])
            latents = self._side_latents(batch, "winner", draw.latent_eps_w, device)
            if with_losers:
                latents = torch.cat([latents, self._side_latents(batch, "loser", draw.latent_eps_l, device)])
        noise = draw.noise.to(device).repeat(repeat, 1, 1, 1)
        timesteps = draw.timesteps.to(device).repeat(repeat)
        noisy, target = self.noisy_input_and_target(latents, noise, timesteps)
        original_size, crop_top_left = batch.micro_conditioning(with_losers)
        cond = self.image_conditioning(prompt_cond, original_size, crop_top_left, resolution)
        return DenoisingProblem(
            noisy, target, timesteps, cond, batch.num_pairs, self.loss_weight(timesteps), list(batch.slots)
        )

    def loss_weight(self, timesteps: torch.Tensor) -> torch.Tensor | None:
        """Per-sample loss weight ``[N]`` for these timesteps; None means 1 (plain mean)."""
        return None

    # ---------------------------------------------------------------- prediction

    def predict(self, denoiser: Denoiser, problem: DenoisingProblem) -> torch.Tensor:
        """The denoiser's output for ``problem.noisy`` ``[N,C,h,w]``."""
        raise NotImplementedError

    def errors(self, denoiser: Denoiser, problem: DenoisingProblem) -> torch.Tensor:
        """Per-sample errors ``[N]``: mean over C,H,W of ``(prediction - target)^2``, times the
        problem's weight when it has one."""
        return self.errors_of(self.predict(denoiser, problem), problem)

    def errors_of(self, prediction: torch.Tensor, problem: DenoisingProblem) -> torch.Tensor:
        """:meth:`errors` of a prediction ``[N,C,h,w]`` already made."""
        err = per_sample_error(prediction, problem.target)
        return err if problem.weight is None else err * problem.weight

    # ---------------------------------------------------------------- adapters and inference

    @classmethod
    def pipeline_class(cls) -> Any:
        """The diffusers pipeline class of this family."""
        raise NotImplementedError

    def pipeline(self, denoiser: Denoiser | None = None) -> Any:
        """A diffusers text-to-image pipeline over these components (optionally another denoiser)."""
        raise NotImplementedError

    @classmethod
    def image_to_image_class(cls) -> Any:
        """The diffusers image-to-image pipeline class of this family (SDEdit from a layout)."""
        raise NotImplementedError

    def image_to_image_pipeline(self, pipe: Any) -> Any:
        """The image-to-image pipeline over the components of ``pipe`` (``from_pipe``: the same
        modules, LoRA and scheduler, nothing loaded or copied)."""
        img2img = self.image_to_image_class().from_pipe(pipe)
        img2img.scheduler = pipe.scheduler
        return img2img

    def save_lora(self, denoiser: Denoiser, out_dir: Path) -> Path:
        """Write the denoiser's LoRA as ``pytorch_lora_weights.safetensors``, loadable by
        ``pipeline.load_lora_weights(dir)`` of this family."""
        from prefdiff.models.lora import save_lora_diffusers

        return save_lora_diffusers(self.pipeline_class(), self.denoiser_name, denoiser, out_dir, self.lora_legacy_keys)

    @classmethod
    def build_tiny(cls, out: Path, prediction_type: str, seed: int) -> Path:
        """Build a random-init tiny pipeline of this family, saved in diffusers format at ``out``."""
        raise NotImplementedError


BACKBONES: Registry[type[Backbone]] = Registry("model family", package="prefdiff.models", error=ModelLoadError)
