"""What the rectified-flow families (SD3/SD3.5, FLUX.1) share: a ``FlowMatchEulerDiscreteScheduler``,
continuous noise levels ``sigma`` in (0, 1], a 16-channel VAE with a shift and a scale, and a
transformer that predicts the flow velocity.

Training (Esser et al., 2024, "Scaling Rectified Flow Transformers"):

- ``x_t = (1 - sigma) * x_0 + sigma * noise`` and the target velocity ``noise - x_0``;
- ``u`` is drawn per pair from the family's density (``model.timestep_sampling``: uniform,
  logit-normal or mode) by ``diffusers.training_utils.compute_density_for_timestep_sampling``,
  then mapped to a sigma by the scheduler's own table, which holds its ``shift``
  (``sigma = shift * u / (1 + (shift - 1) * u)``); a scheduler with dynamic shifting (FLUX.1)
  shifts by the image's token count instead, as its pipeline does at inference;
- the per-sample loss weight is ``compute_loss_weighting_for_sd3`` (``model.loss_weighting``).

Winner and loser of a pair share ``u``, sigma and the noise. Flow-DPO is then the ordinary
DPO objective on these velocity errors.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import torch

from prefdiff.config import ModelConfig
from prefdiff.models.base import Backbone, Denoiser, NoiseDraw, pair_generator

# the pipelines' own defaults for the T5 prompt length
DEFAULT_T5_TOKENS = {"sd3": 256, "flux": 512}


class FlowBackbone(Backbone):
    """A transformer trained on the flow velocity ``noise - x_0``; timesteps are ``sigma * 1000``."""

    denoiser_name: ClassVar[str] = "transformer"
    flow_matching: ClassVar[bool] = True
    lora_legacy_keys: ClassVar[bool] = False
    t5_tokenizer_name: ClassVar[str] = ""  # the component that tokenizes T5 prompts

    def __init__(self, path: Path, components: dict[str, Any], options: ModelConfig | None = None) -> None:
        super().__init__(path, components, options)
        self.num_train_timesteps = int(self.noise_scheduler.config.num_train_timesteps)
        # the training table, taken before any pipeline could call set_timesteps on a scheduler
        self.sigma_table: torch.Tensor = self.noise_scheduler.sigmas[: self.num_train_timesteps].clone().float()
        length = self.options.max_sequence_length
        self.max_sequence_length: int = length if length is not None else self.default_sequence_length()

    @classmethod
    def _load_components(cls, path: Path, options: ModelConfig) -> dict[str, Any]:
        from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler

        components: dict[str, Any] = {
            "transformer": cls.denoiser_class().from_pretrained(str(path), subfolder="transformer"),
            "vae": AutoencoderKL.from_pretrained(str(path), subfolder="vae"),
            "noise_scheduler": FlowMatchEulerDiscreteScheduler.from_pretrained(str(path), subfolder="scheduler"),
        }
        components.update(cls._load_text_components(path))
        return components

    @classmethod
    def _load_text_components(cls, path: Path) -> dict[str, Any]:
        raise NotImplementedError

    def default_sequence_length(self) -> int:
        """The pipeline's default T5 prompt length, capped by the T5 tokenizer's ``model_max_length``
        (a pipeline trained on short prompts, as the toy base, says so there)."""
        limit = getattr(self.components.get(self.t5_tokenizer_name), "model_max_length", None)
        default = DEFAULT_T5_TOKENS[self.family]
        return min(default, int(limit)) if isinstance(limit, int) and limit > 0 else default

    def encoding_settings(self) -> dict[str, Any]:
        return {"max_sequence_length": self.max_sequence_length}

    def native_resolution(self) -> int:
        factor = 2 ** (len(self.vae.config.block_out_channels) - 1)
        return int(self.denoiser.config.sample_size) * factor

    # ---------------------------------------------------------------- noise levels

    def draw_noise(self, slots: list[int], seed: int, latent_shape: tuple[int, int, int]) -> NoiseDraw:
        """Per pair, from its slot's generator: ``u`` from the density, the noise, then the
        winner's and the loser's latent-sampling noise (in that order). ``timesteps [P]`` are
        ``sigma * num_train_timesteps``, the units SD3's transformer and the scheduler use."""
        from diffusers.training_utils import compute_density_for_timestep_sampling

        opts = self.options
        noise, u, eps_w, eps_l = [], [], [], []
        for slot in slots:
            gen = pair_generator(seed, slot)
            u.append(
                compute_density_for_timestep_sampling(
                    opts.timestep_sampling, 1, opts.logit_mean, opts.logit_std, opts.mode_scale, generator=gen
                )
            )
            noise.append(torch.randn(latent_shape, generator=gen))
            eps_w.append(torch.randn(latent_shape, generator=gen))
            eps_l.append(torch.randn(latent_shape, generator=gen))
        sigmas = self.sigmas_for(torch.cat(u), latent_shape)
        return NoiseDraw(torch.stack(noise), sigmas * self.num_train_timesteps, torch.stack(eps_w), torch.stack(eps_l))

    def sigmas_for(self, u: torch.Tensor, latent_shape: tuple[int, int, int]) -> torch.Tensor:
        """``u [P]`` in [0, 1] -> sigmas ``[P]`` through the scheduler's table (its static shift is
        in the table), or, with dynamic shifting, the unshifted table shifted by ``mu`` of the
        image's token count (``calculate_shift`` with the scheduler's settings)."""
        indices = (u * self.num_train_timesteps).long().clamp(0, self.num_train_timesteps - 1)
        sigmas = self.sigma_table[indices]  # index 0 is sigma 1, as in diffusers' training scripts
        config = self.noise_scheduler.config
        if getattr(config, "use_dynamic_shifting", False):
            mu = self.dynamic_shift_mu(latent_shape)
            sigmas = self.noise_scheduler.time_shift(mu, 1.0, sigmas)
        return sigmas

    @staticmethod
    def image_tokens(latent_shape: tuple[int, int, int]) -> int:
        """Tokens the transformer sees for a latent ``(C, h, w)``: one per 2x2 patch (SD3's
        ``patch_size`` 2, FLUX.1's 2x2 packing)."""
        return (latent_shape[1] // 2) * (latent_shape[2] // 2)

    def dynamic_shift_mu(self, latent_shape: tuple[int, int, int]) -> float:
        from diffusers.pipelines.flux.pipeline_flux import calculate_shift

        config = self.noise_scheduler.config
        return float(
            calculate_shift(
                self.image_tokens(latent_shape),
                config.get("base_image_seq_len", 256),
                config.get("max_image_seq_len", 4096),
                config.get("base_shift", 0.5),
                config.get("max_shift", 1.15),
            )
        )

    def noisy_input_and_target(
        self, latents: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``x_t = (1 - sigma) x_0 + sigma noise`` and the velocity ``noise - x_0``."""
        sigma = (timesteps.float() / self.num_train_timesteps).view(-1, 1, 1, 1).to(latents.dtype)
        return (1.0 - sigma) * latents + sigma * noise, noise - latents

    def loss_weight(self, timesteps: torch.Tensor) -> torch.Tensor | None:
        """``compute_loss_weighting_for_sd3`` of the sigmas; None for ``model.loss_weighting=none``."""
        if self.options.loss_weighting == "none":
            return None
        from diffusers.training_utils import compute_loss_weighting_for_sd3

        sigmas = timesteps.float() / self.num_train_timesteps
        return compute_loss_weighting_for_sd3(self.options.loss_weighting, sigmas).float()

    # ---------------------------------------------------------------- prompts

    def pipeline(self, denoiser: Denoiser | None = None) -> Any:
        from diffusers import FlowMatchEulerDiscreteScheduler

        parts = {name: self.components[name] for name in self.text_components}
        scheduler = FlowMatchEulerDiscreteScheduler.from_config(self.noise_scheduler.config)
        return self.pipeline_class()(
            vae=self.vae,
            transformer=denoiser if denoiser is not None else self.denoiser,
            scheduler=scheduler,
            **parts,
        )
