"""FLUX.1: ``FluxTransformer2DModel`` on 16-channel latents packed into 2x2 patches (``[N, h/2 *
w/2, 64]`` tokens with position ids), a CLIP encoder (pooled output) and a T5 encoder.

Conditioning, as ``FluxPipeline.encode_prompt`` builds it: ``encoder_hidden_states [P, L, D_t5]``
(``L = model.max_sequence_length``) and ``pooled_projections [P, D_clip]``. Guidance-distilled
checkpoints (FLUX.1-dev, ``guidance_embeds: true``) also take the guidance value, fed while
training as ``model.guidance``. The scheduler's dynamic shifting moves the noise levels by the
image's token count (see :mod:`prefdiff.models.flow`). The error is taken on the unpacked
velocity ``[N, 16, h, w]``, so it is the same mean as SD3's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import torch

from prefdiff.models.base import BACKBONES, Conditioning, Denoiser, DenoisingProblem
from prefdiff.models.flow import FlowBackbone

# attention of both streams and the feed-forwards of the double blocks, as diffusers' FLUX LoRA scripts
FLUX_LORA_TARGETS = (
    "to_q",
    "to_k",
    "to_v",
    "to_out.0",
    "add_q_proj",
    "add_k_proj",
    "add_v_proj",
    "to_add_out",
    "ff.net.0.proj",
    "ff.net.2",
    "ff_context.net.0.proj",
    "ff_context.net.2",
)


@BACKBONES.register("flux")
class FluxBackbone(FlowBackbone):
    family: ClassVar[str] = "flux"
    pipeline_classes: ClassVar[tuple[str, ...]] = ("FluxPipeline",)
    text_components: ClassVar[tuple[str, ...]] = ("text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2")
    lora_target_modules: ClassVar[tuple[str, ...]] = FLUX_LORA_TARGETS
    t5_tokenizer_name: ClassVar[str] = "tokenizer_2"

    @classmethod
    def denoiser_class(cls) -> Any:
        from diffusers import FluxTransformer2DModel

        return FluxTransformer2DModel

    @classmethod
    def _load_text_components(cls, path: Path) -> dict[str, Any]:
        from transformers import AutoTokenizer, CLIPTextModel, T5EncoderModel

        return {
            "tokenizer": AutoTokenizer.from_pretrained(str(path), subfolder="tokenizer"),
            "tokenizer_2": AutoTokenizer.from_pretrained(str(path), subfolder="tokenizer_2"),
            "text_encoder": CLIPTextModel.from_pretrained(str(path), subfolder="text_encoder"),
            "text_encoder_2": T5EncoderModel.from_pretrained(str(path), subfolder="text_encoder_2"),
        }

    @classmethod
    def image_to_image_class(cls) -> Any:
        from diffusers import FluxImg2ImgPipeline

        return FluxImg2ImgPipeline

    @classmethod
    def pipeline_class(cls) -> Any:
        from diffusers import FluxPipeline

        return FluxPipeline

    def native_resolution(self) -> int:
        """FLUX.1's transformer config has no sample size; its VAE config holds the image size."""
        return int(self.vae.config.sample_size)

    @torch.no_grad()
    def encode_prompts(self, prompts: list[str]) -> Conditioning:
        """``encoder_hidden_states [P, L, D_t5]`` and ``pooled_projections [P, D_clip]`` from the
        pipeline's own ``encode_prompt``."""
        pipe = self.pipeline()
        device = self.components["text_encoder"].device
        embeds, pooled, _ = pipe.encode_prompt(
            prompts, prompt_2=None, device=device, max_sequence_length=self.max_sequence_length
        )
        return {"encoder_hidden_states": embeds, "pooled_projections": pooled}

    def predict(self, denoiser: Denoiser, problem: DenoisingProblem) -> torch.Tensor:
        """Pack ``noisy [N, C, h, w]`` into 2x2 tokens, run the transformer, unpack the velocity."""
        from diffusers import FluxPipeline

        cond = problem.conditioning
        n, channels, height, width = problem.noisy.shape
        packed = FluxPipeline._pack_latents(problem.noisy, n, channels, height, width)
        image_ids = FluxPipeline._prepare_latent_image_ids(n, height // 2, width // 2, packed.device, packed.dtype)
        text = cond["encoder_hidden_states"]
        text_ids = torch.zeros(text.shape[1], 3, device=text.device, dtype=text.dtype)
        guidance = None
        if denoiser_config(denoiser).guidance_embeds:
            guidance = torch.full((n,), self.options.guidance, device=packed.device, dtype=torch.float32)
        out = denoiser(
            hidden_states=packed,
            timestep=problem.timesteps / self.num_train_timesteps,
            guidance=guidance,
            pooled_projections=cond["pooled_projections"],
            encoder_hidden_states=text,
            txt_ids=text_ids,
            img_ids=image_ids,
            return_dict=False,
        )[0]
        scale = 2 ** (len(self.vae.config.block_out_channels) - 1)
        return FluxPipeline._unpack_latents(out, height * scale, width * scale, scale)

    @classmethod
    def build_tiny(cls, out: Path, prediction_type: str, seed: int) -> Path:
        """A CLIP encoder of width 32, a T5 encoder of width 64, a 16-channel VAE (downsampling
        8) and a FLUX transformer of one double and one single block (width 32, guidance
        embedding on, as FLUX.1-dev)."""
        from diffusers import FluxPipeline, FluxTransformer2DModel
        from transformers import CLIPTextModel, T5EncoderModel

        from prefdiff.models.tiny import (
            TINY_IMAGE_SIZE,
            TINY_T5_WIDTH,
            TINY_TEXT_WIDTH,
            flow_scheduler,
            flow_vae,
            tiny_text_parts,
        )

        text = tiny_text_parts(out, seed)
        text_encoder = CLIPTextModel(text.clip_config(TINY_TEXT_WIDTH, TINY_TEXT_WIDTH))
        text_encoder_2 = T5EncoderModel(text.t5_config(TINY_T5_WIDTH))
        vae = flow_vae((16, 32, 32, 32), TINY_IMAGE_SIZE, scaling=0.3611, shift=0.1159)
        transformer = FluxTransformer2DModel(
            patch_size=1,
            in_channels=64,
            num_layers=1,
            num_single_layers=1,
            attention_head_dim=16,
            num_attention_heads=2,
            joint_attention_dim=TINY_T5_WIDTH,
            pooled_projection_dim=TINY_TEXT_WIDTH,
            guidance_embeds=True,
            axes_dims_rope=(4, 6, 6),
        )
        pipe = FluxPipeline(
            transformer=transformer,
            scheduler=flow_scheduler(dynamic=True),
            vae=vae,
            text_encoder=text_encoder,
            tokenizer=text.clip_tokenizer,
            text_encoder_2=text_encoder_2,
            tokenizer_2=text.t5_tokenizer,
        )
        pipe.save_pretrained(str(out))
        return out


def denoiser_config(denoiser: Denoiser) -> Any:
    """The diffusers config of a denoiser, through a DDP/FSDP wrapper if there is one."""
    return getattr(denoiser, "config", None) or denoiser.module.config
