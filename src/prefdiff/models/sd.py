"""Stable Diffusion 1.x / 2.x: one CLIP text encoder, epsilon or v-prediction."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import torch

from prefdiff.models.base import BACKBONES, Conditioning, Denoiser, DenoisingProblem
from prefdiff.models.ddpm import DDPMBackbone


@BACKBONES.register("sd")
class SDBackbone(DDPMBackbone):
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

    def predict(self, denoiser: Denoiser, problem: DenoisingProblem) -> torch.Tensor:
        cond = problem.conditioning
        return denoiser(problem.noisy, problem.timesteps, encoder_hidden_states=cond["encoder_hidden_states"]).sample

    @classmethod
    def image_to_image_class(cls) -> Any:
        from diffusers import StableDiffusionImg2ImgPipeline

        return StableDiffusionImg2ImgPipeline

    @classmethod
    def pipeline_class(cls) -> Any:
        from diffusers import StableDiffusionPipeline

        return StableDiffusionPipeline

    def pipeline(self, denoiser: Denoiser | None = None) -> Any:
        from diffusers import DDIMScheduler, StableDiffusionPipeline

        return StableDiffusionPipeline(
            vae=self.vae,
            text_encoder=self.components["text_encoder"],
            tokenizer=self.components["tokenizer"],
            unet=denoiser if denoiser is not None else self.denoiser,
            scheduler=DDIMScheduler.from_config(self.noise_scheduler.config),
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )

    @classmethod
    def build_tiny(cls, out: Path, prediction_type: str, seed: int) -> Path:
        """One CLIP text encoder of width 32 and a two-level UNet with cross-attention width 32."""
        from diffusers import StableDiffusionPipeline, UNet2DConditionModel
        from transformers import CLIPTextModel

        from prefdiff.models.tiny import TINY_TEXT_WIDTH, clip_text_config, tiny_shared_parts

        parts = tiny_shared_parts(out, seed, prediction_type)
        text_encoder = CLIPTextModel(clip_text_config(parts.vocab_size, TINY_TEXT_WIDTH, TINY_TEXT_WIDTH))
        unet = UNet2DConditionModel(cross_attention_dim=TINY_TEXT_WIDTH, **parts.unet_kwargs)
        pipe = StableDiffusionPipeline(
            vae=parts.vae,
            text_encoder=text_encoder,
            tokenizer=parts.tokenizer,
            unet=unet,
            scheduler=parts.scheduler,
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )
        pipe.save_pretrained(str(out))
        return out
