"""What the UNet families (SD 1.x/2.x, SDXL) share: a DDPM noise schedule with integer
timesteps, epsilon or v-prediction, ``UNet2DConditionModel`` and ``AutoencoderKL``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from prefdiff.config import ModelConfig
from prefdiff.errors import ConfigError, ModelLoadError
from prefdiff.models.base import Backbone, Denoiser, NoiseDraw, pair_generator

PREDICTION_TYPES = ("epsilon", "v_prediction")


class DDPMBackbone(Backbone):
    """A UNet trained on ``x_t = sqrt(a_t) x_0 + sqrt(1 - a_t) eps`` with a target of ``eps`` or ``v``."""

    def __init__(self, path: Path, components: dict[str, Any], options: ModelConfig | None = None) -> None:
        super().__init__(path, components, options)
        self.prediction_type: str = self.noise_scheduler.config.prediction_type

    @property
    def unet(self) -> Denoiser:
        return self.denoiser

    @classmethod
    def denoiser_class(cls) -> Any:
        from diffusers import UNet2DConditionModel

        return UNet2DConditionModel

    @classmethod
    def _load_components(cls, path: Path, options: ModelConfig) -> dict[str, Any]:
        from diffusers import AutoencoderKL, DDPMScheduler

        components: dict[str, Any] = {
            "unet": cls.denoiser_class().from_pretrained(str(path), subfolder="unet"),
            "vae": AutoencoderKL.from_pretrained(str(path), subfolder="vae"),
            "noise_scheduler": DDPMScheduler.from_pretrained(str(path), subfolder="scheduler"),
        }
        components.update(cls._load_text_components(path))
        chosen = options.prediction_type or components["noise_scheduler"].config.prediction_type
        if chosen not in PREDICTION_TYPES:
            raise ModelLoadError(
                f"{path}/scheduler: prediction_type {chosen!r} is not supported (epsilon, v_prediction)"
            )
        components["noise_scheduler"].register_to_config(prediction_type=chosen)
        if options.timestep_spacing is not None:  # only sampling reads it: the samplers copy this config
            components["noise_scheduler"].register_to_config(timestep_spacing=options.timestep_spacing)
        if options.zero_terminal_snr:
            if chosen != "v_prediction":
                raise ConfigError(
                    f"config key 'model.zero_terminal_snr': {path} predicts {chosen}; at zero terminal SNR the last "
                    "timestep's input is pure noise, so an epsilon target carries nothing about the image and DDIM "
                    "divides by zero (Lin et al. 2023 switch to v-prediction): set model.prediction_type=v_prediction"
                )
            components["noise_scheduler"] = DDPMScheduler.from_config(
                components["noise_scheduler"].config, rescale_betas_zero_snr=True
            )
        return components

    @classmethod
    def _load_text_components(cls, path: Path) -> dict[str, Any]:
        raise NotImplementedError

    def use_timesteps(self, timesteps: list[int] | None) -> None:
        """Draw each pair's timestep uniformly from ``timesteps`` (checked against the schedule's
        ``num_train_timesteps``); None restores the full range."""
        num_train_timesteps = int(self.noise_scheduler.config.num_train_timesteps)
        if timesteps is not None:
            outside = [t for t in timesteps if not 0 <= t < num_train_timesteps]
            if outside or not timesteps:
                raise ConfigError(
                    f"config key 'train.timesteps': {outside or timesteps} outside [0, {num_train_timesteps}), "
                    f"the timesteps of {self.path}/scheduler"
                )
        self.timestep_set = tuple(sorted(set(timesteps))) if timesteps is not None else None

    def draw_noise(self, slots: list[int], seed: int, latent_shape: tuple[int, int, int]) -> NoiseDraw:
        """Per pair, from its slot's generator: a timestep (uniform in [0, T), or uniform over
        ``timestep_set`` when one is set: one draw either way), the noise, then the winner's and
        the loser's latent-sampling noise (in that order)."""
        num_train_timesteps = int(self.noise_scheduler.config.num_train_timesteps)
        choices = torch.tensor(self.timestep_set) if self.timestep_set is not None else None
        noise, timesteps, eps_w, eps_l = [], [], [], []
        for slot in slots:
            gen = pair_generator(seed, slot)
            if choices is None:
                timesteps.append(torch.randint(0, num_train_timesteps, (1,), generator=gen))
            else:
                timesteps.append(choices[torch.randint(0, len(choices), (1,), generator=gen)])
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
