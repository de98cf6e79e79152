"""Random-init tiny SD / SDXL pipelines, built offline and saved in diffusers format.

Tests, benchmarks and the quickstart use them: nothing here touches the network. The tokenizer
is a byte-level BPE in CLIP's file format whose merges spell out a small English vocabulary,
so common caption words are single tokens.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch

Family = Literal["sd", "sdxl"]

# Words that become single tokens; anything else falls back to characters.
_WORDS = (
    "a an the of on in with and or at to is by for from photo painting drawing picture image "
    "red green blue yellow orange purple pink white black gray grey brown cyan magenta dark light bright "
    "circle square triangle star cross ring diamond heart shape object background small large big tiny "
    "huge centre center left right top bottom corner cat dog house tree car person man woman city sky "
    "sea mountain flower bird portrait landscape beautiful detailed high quality art style"
).split()


def _bytes_to_unicode() -> dict[int, str]:
    """CLIP/GPT-2's reversible map from bytes to printable unicode characters."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    codes = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            codes.append(256 + extra)
            extra += 1
    return dict(zip(printable, (chr(c) for c in codes), strict=True))


def build_clip_tokenizer_files(directory: Path, max_length: int = 77) -> None:
    """Write vocab.json / merges.txt / tokenizer config for a tiny CLIP BPE tokenizer."""
    from transformers import CLIPTokenizer

    alphabet = list(_bytes_to_unicode().values())
    vocab: dict[str, int] = {}
    for symbol in alphabet + [s + "</w>" for s in alphabet]:
        vocab.setdefault(symbol, len(vocab))
    merges: list[tuple[str, str]] = []
    for word in _WORDS:
        pieces = list(word[:-1]) + [word[-1] + "</w>"]
        left = pieces[0]
        for right in pieces[1:]:
            merged = left + right
            if merged not in vocab:
                merges.append((left, right))
                vocab[merged] = len(vocab)
            left = merged
    for special in ("<|startoftext|>", "<|endoftext|>"):
        vocab[special] = len(vocab)
    tokenizer = CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=max_length)
    tokenizer.save_pretrained(str(directory))


def clip_text_config(vocab_size: int, hidden: int, projection_dim: int):
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        vocab_size=vocab_size,
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=2,
        num_attention_heads=2,
        max_position_embeddings=77,
        projection_dim=projection_dim,
        bos_token_id=vocab_size - 2,
        eos_token_id=vocab_size - 1,
        pad_token_id=vocab_size - 1,
        hidden_act="quick_gelu",
    )


def small_vae(block_out_channels: tuple[int, ...], sample_size: int, mid_block_attention: bool = True):
    """A random-init SD-style VAE (4 latent channels) that downsamples by 2 per level after the first."""
    from diffusers import AutoencoderKL

    levels = len(block_out_channels)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * levels,
        up_block_types=("UpDecoderBlock2D",) * levels,
        block_out_channels=block_out_channels,
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=8,
        sample_size=sample_size,
        mid_block_add_attention=mid_block_attention,
    )


def two_level_unet_kwargs(latent_size: int, norm_num_groups: int) -> dict:
    """UNet2DConditionModel settings of the small UNets here: channels 32/64, one layer per block,
    cross-attention only at the lower resolution (and in the mid block), 4 latent channels."""
    return dict(
        sample_size=latent_size,
        in_channels=4,
        out_channels=4,
        layers_per_block=1,
        block_out_channels=(32, 64),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        norm_num_groups=norm_num_groups,
        attention_head_dim=8,
    )


def sd_noise_scheduler(prediction_type: str = "epsilon"):
    """A DDPM scheduler with Stable Diffusion's noise schedule (scaled linear, 1000 steps)."""
    from diffusers import DDPMScheduler

    return DDPMScheduler(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        prediction_type=prediction_type,
        steps_offset=1,
    )


def build_tiny_pipeline(
    out_dir: str | Path,
    family: Family = "sd",
    prediction_type: Literal["epsilon", "v_prediction"] = "epsilon",
    seed: int = 0,
    sample_size: int = 64,
) -> Path:
    """Build a random-init tiny pipeline of ``family`` and save it to ``out_dir``.

    The VAE downsamples by 8 like SD's (``sample_size`` px images give ``sample_size/8`` latents), the
    UNet has two resolution levels and cross-attention width 32 (SD) or 64 (SDXL: two text
    encoders of width 32, concatenated).
    """
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)

    build_clip_tokenizer_files(out / "tokenizer")
    tokenizer = CLIPTokenizer.from_pretrained(str(out / "tokenizer"))
    vocab_size = len(tokenizer)

    vae = small_vae((16, 32, 32, 32), sample_size)
    scheduler = sd_noise_scheduler(prediction_type)
    unet_kwargs = two_level_unet_kwargs(sample_size // 8, norm_num_groups=8)
    text_hidden = 32
    if family == "sd":
        text_encoder = CLIPTextModel(clip_text_config(vocab_size, text_hidden, text_hidden))
        unet = UNet2DConditionModel(cross_attention_dim=text_hidden, **unet_kwargs)
        from diffusers import StableDiffusionPipeline

        pipe = StableDiffusionPipeline(
            vae=vae,
            text_encoder=text_encoder,
            tokenizer=tokenizer,
            unet=unet,
            scheduler=scheduler,
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )
    elif family == "sdxl":
        from diffusers import StableDiffusionXLPipeline

        text_encoder = CLIPTextModel(clip_text_config(vocab_size, text_hidden, text_hidden))
        text_encoder_2 = CLIPTextModelWithProjection(clip_text_config(vocab_size, text_hidden, text_hidden))
        time_embed_dim = 8
        unet = UNet2DConditionModel(
            cross_attention_dim=2 * text_hidden,
            addition_embed_type="text_time",
            addition_time_embed_dim=time_embed_dim,
            projection_class_embeddings_input_dim=6 * time_embed_dim + text_hidden,
            transformer_layers_per_block=(1, 1),
            **unet_kwargs,
        )
        pipe = StableDiffusionXLPipeline(
            vae=vae,
            text_encoder=text_encoder,
            text_encoder_2=text_encoder_2,
            tokenizer=tokenizer,
            tokenizer_2=tokenizer,
            unet=unet,
            scheduler=scheduler,
            force_zeros_for_empty_prompt=True,
        )
    else:
        raise ValueError(f"unknown family {family!r}: expected 'sd' or 'sdxl'")
    pipe.save_pretrained(str(out))
    return out
