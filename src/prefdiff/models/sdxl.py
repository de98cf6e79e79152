"""SDXL: two text encoders (penultimate hidden states concatenated), pooled embeddings from the
second, and micro-conditioning ``add_time_ids`` from each image's own original size and crop."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import torch

from prefdiff.models.base import BACKBONES, Conditioning, Denoiser, DenoisingProblem
from prefdiff.models.ddpm import DDPMBackbone


@BACKBONES.register("sdxl")
class SDXLBackbone(DDPMBackbone):
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
                prompts,
                padding="max_length",
                max_length=tokenizer.model_max_length,
                truncation=True,
                return_tensors="pt",
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

    def image_conditioning(
        self, prompt_cond: Conditioning, original_size: torch.Tensor, crop_top_left: torch.Tensor, resolution: int
    ) -> Conditioning:
        cond = super().image_conditioning(prompt_cond, original_size, crop_top_left, resolution)
        embeds = cond["text_embeds"]
        cond["time_ids"] = self.time_ids(original_size, crop_top_left, resolution).to(embeds.device, embeds.dtype)
        return cond

    def predict(self, denoiser: Denoiser, problem: DenoisingProblem) -> torch.Tensor:
        cond = problem.conditioning
        added = {"text_embeds": cond["text_embeds"], "time_ids": cond["time_ids"]}
        return denoiser(
            problem.noisy,
            problem.timesteps,
            encoder_hidden_states=cond["encoder_hidden_states"],
            added_cond_kwargs=added,
        ).sample

    @classmethod
    def image_to_image_class(cls) -> Any:
        from diffusers import StableDiffusionXLImg2ImgPipeline

        return StableDiffusionXLImg2ImgPipeline

    @classmethod
    def pipeline_class(cls) -> Any:
        from diffusers import StableDiffusionXLPipeline

        return StableDiffusionXLPipeline

    def pipeline(self, denoiser: Denoiser | None = None) -> Any:
        from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline

        return StableDiffusionXLPipeline(
            vae=self.vae,
            text_encoder=self.components["text_encoder"],
            text_encoder_2=self.components["text_encoder_2"],
            tokenizer=self.components["tokenizer"],
            tokenizer_2=self.components["tokenizer_2"],
            unet=denoiser if denoiser is not None else self.denoiser,
            scheduler=EulerDiscreteScheduler.from_config(self.noise_scheduler.config),
        )

    @classmethod
    def build_tiny(cls, out: Path, prediction_type: str, seed: int) -> Path:
        """Two CLIP text encoders of width 32 (the second with a projection; one tokenizer file
        for both) and a two-level UNet with cross-attention width 64 and SDXL's text-time
        embedding."""
        from diffusers import StableDiffusionXLPipeline, UNet2DConditionModel
        from transformers import CLIPTextModel, CLIPTextModelWithProjection

        from prefdiff.models.tiny import TINY_TEXT_WIDTH, clip_text_config, tiny_shared_parts

        parts = tiny_shared_parts(out, seed, prediction_type)
        width = TINY_TEXT_WIDTH
        text_encoder = CLIPTextModel(clip_text_config(parts.vocab_size, width, width))
        text_encoder_2 = CLIPTextModelWithProjection(clip_text_config(parts.vocab_size, width, width))
        time_embed_dim = 8
        unet = UNet2DConditionModel(
            cross_attention_dim=2 * width,
            addition_embed_type="text_time",
            addition_time_embed_dim=time_embed_dim,
            projection_class_embeddings_input_dim=6 * time_embed_dim + width,
            transformer_layers_per_block=(1, 1),
            **parts.unet_kwargs,
        )
        pipe = StableDiffusionXLPipeline(
            vae=parts.vae,
            text_encoder=text_encoder,
            text_encoder_2=text_encoder_2,
            tokenizer=parts.tokenizer,
            tokenizer_2=parts.tokenizer,
            unet=unet,
            scheduler=parts.scheduler,
            force_zeros_for_empty_prompt=True,
        )
        pipe.save_pretrained(str(out))
        return out
