"""Stable Diffusion 1.x / 2.x: one CLIP text encoder, epsilon or v-prediction."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import torch

from prefdiff.models.base import Backbone, Conditioning


class SDBackbone(Backbone):
    family: ClassVar[str] = "sd"
    pipeline_classes: ClassVar[tuple[str, ...]] = ("StableDiffusionPipeline",)
    text_components: ClassVar[tuple[str, ...]] = ("text_encoder", "tokenizer")

    @classmethod
    def _load_text_components(cls, path: Path) -> dict[str, Any]:
        from transformers import CLIPTextModel, CLIPTokenizer

        return {
            "tokenizer": CLIPTokenizer.from_pretrained(str(path), subfolder="tokenizer"),
            "text_encoder": CLIPTextModel.from_pretrained(str(path), subfolder="text_encoder"),
        }

    @torch.no_grad()
    def encode_prompts(self, prompts: list[str]) -> Conditioning:
        """``encoder_hidden_states [P, L, D]``: the last hidden state of the text encoder."""
        tokenizer = self.components["tokenizer"]
        encoder = self.components["text_encoder"]
        ids = tokenizer(
            prompts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt"
        ).input_ids.to(encoder.device)
        return {"encoder_hidden_states": encoder(ids)[0]}

    def predict(self, unet: torch.nn.Module, noisy: torch.Tensor, timesteps: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        return unet(noisy, timesteps, encoder_hidden_states=cond["encoder_hidden_states"]).sample

    @staticmethod
    def pipeline_class() -> Any:
        from diffusers import StableDiffusionPipeline

        return StableDiffusionPipeline

    def pipeline(self, unet: torch.nn.Module | None = None) -> Any:
        from diffusers import DDIMScheduler, StableDiffusionPipeline

        return StableDiffusionPipeline(
            vae=self.vae,
            text_encoder=self.components["text_encoder"],
            tokenizer=self.components["tokenizer"],
            unet=unet if unet is not None else self.unet,
            scheduler=DDIMScheduler.from_config(self.noise_scheduler.config),
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )
