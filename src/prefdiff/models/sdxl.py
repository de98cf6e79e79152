"""SDXL: two text encoders (penultimate hidden states concatenated), pooled embeddings from the
second, and micro-conditioning ``add_time_ids`` from each image's own original size and crop."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import torch

from prefdiff.models.base import Backbone, Conditioning


class SDXLBackbone(Backbone):
    family: ClassVar[str] = "sdxl"
    pipeline_classes: ClassVar[tuple[str, ...]] = ("StableDiffusionXLPipeline",)
    text_components: ClassVar[tuple[str, ...]] = ("text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2")

    @classmethod
    def _load_text_components(cls, path: Path) -> dict[str, Any]:
        from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

        return {
            "tokenizer": CLIPTokenizer.from_pretrained(str(path), subfolder="tokenizer"),
            "tokenizer_2": CLIPTokenizer.from_pretrained(str(path), subfolder="tokenizer_2"),
            "text_encoder": CLIPTextModel.from_pretrained(str(path), subfolder="text_encoder"),
            "text_encoder_2": CLIPTextModelWithProjection.from_pretrained(str(path), subfolder="text_encoder_2"),
        }

    @torch.no_grad()
    def encode_prompts(self, prompts: list[str]) -> Conditioning:
        """``encoder_hidden_states [P, L, D1+D2]`` (penultimate layers) and ``text_embeds [P, D2]``
        (the second encoder's projected pooled output)."""
        hidden_states = []
        pooled = None
        for tok_name, enc_name in (("tokenizer", "text_encoder"), ("tokenizer_2", "text_encoder_2")):
            tokenizer, encoder = self.components[tok_name], self.components[enc_name]
            ids = tokenizer(
                prompts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt"
            ).input_ids.to(encoder.device)
            out = encoder(ids, output_hidden_states=True)
            hidden_states.append(out.hidden_states[-2])
            pooled = out[0]  # text_embeds of CLIPTextModelWithProjection
        assert pooled is not None
        return {"encoder_hidden_states": torch.cat(hidden_states, dim=-1), "text_embeds": pooled}

    @staticmethod
    def time_ids(original_size: torch.Tensor, crop_top_left: torch.Tensor, resolution: int) -> torch.Tensor:
        """``[N, 6]``: (orig_h, orig_w, crop_top, crop_left, target_h, target_w) per image."""
        target = torch.tensor([resolution, resolution], dtype=torch.float32).expand(original_size.shape[0], 2)
        return torch.cat([original_size.float(), crop_top_left.float(), target], dim=1)

    def image_conditioning(self, prompt_cond: Conditioning, micro: dict[str, torch.Tensor], resolution: int) -> Conditioning:
        cond = super().image_conditioning(prompt_cond, micro, resolution)
        device = cond["text_embeds"].device
        cond["time_ids"] = self.time_ids(micro["original_size"], micro["crop_top_left"], resolution).to(
            device, cond["text_embeds"].dtype
        )
        return cond

    def predict(self, unet: torch.nn.Module, noisy: torch.Tensor, timesteps: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        added = {"text_embeds": cond["text_embeds"], "time_ids": cond["time_ids"]}
        return unet(noisy, timesteps, encoder_hidden_states=cond["encoder_hidden_states"], added_cond_kwargs=added).sample

    @staticmethod
    def pipeline_class() -> Any:
        from diffusers import StableDiffusionXLPipeline

        return StableDiffusionXLPipeline

    def pipeline(self, unet: torch.nn.Module | None = None) -> Any:
        from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline

        return StableDiffusionXLPipeline(
            vae=self.vae,
            text_encoder=self.components["text_encoder"],
            text_encoder_2=self.components["text_encoder_2"],
            tokenizer=self.components["tokenizer"],
            tokenizer_2=self.components["tokenizer_2"],
            unet=unet if unet is not None else self.unet,
            scheduler=EulerDiscreteScheduler.from_config(self.noise_scheduler.config),
        )
