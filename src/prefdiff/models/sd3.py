"""Stable Diffusion 3 / 3.5: ``SD3Transformer2DModel`` (MMDiT) on 16-channel latents, two CLIP
encoders (penultimate hidden states and projected pooled outputs) and a T5 encoder.

Conditioning, as ``StableDiffusion3Pipeline.encode_prompt`` builds it: ``encoder_hidden_states
[P, 77 + L, D_t5]`` (the two CLIP hidden states concatenated, zero-padded to T5's width, then the
``L = model.max_sequence_length`` T5 tokens) and ``pooled_projections [P, D1 + D2]``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import torch

from prefdiff.models.base import BACKBONES, Conditioning, Denoiser, DenoisingProblem
from prefdiff.models.flow import FlowBackbone

# the joint-attention projections of both streams (image and text), as diffusers' SD3 LoRA scripts adapt
JOINT_ATTENTION_TARGETS = ("to_q", "to_k", "to_v", "to_out.0", "add_q_proj", "add_k_proj", "add_v_proj", "to_add_out")


@BACKBONES.register("sd3")
class SD3Backbone(FlowBackbone):
    family: ClassVar[str] = "sd3"
    pipeline_classes: ClassVar[tuple[str, ...]] = ("StableDiffusion3Pipeline",)
    text_components: ClassVar[tuple[str, ...]] = (
        "text_encoder",
        "text_encoder_2",
        "text_encoder_3",
        "tokenizer",
        "tokenizer_2",
        "tokenizer_3",
    )
    lora_target_modules: ClassVar[tuple[str, ...]] = JOINT_ATTENTION_TARGETS
    t5_tokenizer_name: ClassVar[str] = "tokenizer_3"

    @classmethod
    def denoiser_class(cls) -> Any:
        from diffusers import SD3Transformer2DModel

        return SD3Transformer2DModel

    @classmethod
    def _load_text_components(cls, path: Path) -> dict[str, Any]:
        from transformers import AutoTokenizer, CLIPTextModelWithProjection, T5EncoderModel

        return {
            "tokenizer": AutoTokenizer.from_pretrained(str(path), subfolder="tokenizer"),
            "tokenizer_2": AutoTokenizer.from_pretrained(str(path), subfolder="tokenizer_2"),
            "tokenizer_3": AutoTokenizer.from_pretrained(str(path), subfolder="tokenizer_3"),
            "text_encoder": CLIPTextModelWithProjection.from_pretrained(str(path), subfolder="text_encoder"),
            "text_encoder_2": CLIPTextModelWithProjection.from_pretrained(str(path), subfolder="text_encoder_2"),
            "text_encoder_3": T5EncoderModel.from_pretrained(str(path), subfolder="text_encoder_3"),
        }

    @classmethod
    def image_to_image_class(cls) -> Any:
        from diffusers import StableDiffusion3Img2ImgPipeline

        return StableDiffusion3Img2ImgPipeline

    @classmethod
    def pipeline_class(cls) -> Any:
        from diffusers import StableDiffusion3Pipeline

        return StableDiffusion3Pipeline

    @torch.no_grad()
    def encode_prompts(self, prompts: list[str]) -> Conditioning:
        """``encoder_hidden_states [P, 77 + L, D_t5]`` and ``pooled_projections [P, D1 + D2]``
        from the pipeline's own ``encode_prompt`` (no classifier-free guidance)."""
        pipe = self.pipeline()
        device = self.components["text_encoder"].device
        embeds, _, pooled, _ = pipe.encode_prompt(
            prompts,
            prompt_2=None,
            prompt_3=None,
            device=device,
            do_classifier_free_guidance=False,
            max_sequence_length=self.max_sequence_length,
        )
        return {"encoder_hidden_states": embeds, "pooled_projections": pooled}

    def predict(self, denoiser: Denoiser, problem: DenoisingProblem) -> torch.Tensor:
        cond = problem.conditioning
        return denoiser(
            hidden_states=problem.noisy,
            timestep=problem.timesteps,
            encoder_hidden_states=cond["encoder_hidden_states"],
            pooled_projections=cond["pooled_projections"],
            return_dict=False,
        )[0]

    @classmethod
    def build_tiny(cls, out: Path, prediction_type: str, seed: int) -> Path:
        """Two CLIP encoders of width 32 with 32-wide projections, a T5 encoder of width 64, a
        16-channel VAE (downsampling 8) and a two-block MMDiT of width 32 (patch 2)."""
        from diffusers import SD3Transformer2DModel, StableDiffusion3Pipeline
        from transformers import CLIPTextModelWithProjection, T5EncoderModel

        from prefdiff.models.tiny import (
            TINY_IMAGE_SIZE,
            TINY_T5_WIDTH,
            TINY_TEXT_WIDTH,
            flow_scheduler,
            flow_vae,
            tiny_text_parts,
        )

        text = tiny_text_parts(out, seed)
        width = TINY_TEXT_WIDTH
        text_encoder = CLIPTextModelWithProjection(text.clip_config(width, width))
        text_encoder_2 = CLIPTextModelWithProjection(text.clip_config(width, width))
        text_encoder_3 = T5EncoderModel(text.t5_config(TINY_T5_WIDTH))
        vae = flow_vae((16, 32, 32, 32), TINY_IMAGE_SIZE, scaling=1.5305, shift=0.0609)
        transformer = SD3Transformer2DModel(
            sample_size=TINY_IMAGE_SIZE // 8,
            patch_size=2,
            in_channels=16,
            out_channels=16,
            num_layers=2,
            attention_head_dim=8,
            num_attention_heads=4,
            joint_attention_dim=TINY_T5_WIDTH,
            caption_projection_dim=32,
            pooled_projection_dim=2 * width,
            pos_embed_max_size=16,
        )
        pipe = StableDiffusion3Pipeline(
            transformer=transformer,
            scheduler=flow_scheduler(shift=3.0),
            vae=vae,
            text_encoder=text_encoder,
            tokenizer=text.clip_tokenizer,
            text_encoder_2=text_encoder_2,
            tokenizer_2=text.clip_tokenizer,
            text_encoder_3=text_encoder_3,
            tokenizer_3=text.t5_tokenizer,
        )
        pipe.save_pretrained(str(out))
        return out
