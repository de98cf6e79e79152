"""Random-init tiny pipelines of every family, built offline and saved in diffusers format.

Tests, benchmarks and the quickstart use them: nothing here touches the network. The tokenizer
is a byte-level BPE in CLIP's file format whose merges spell out a small English vocabulary,
so common caption words are single tokens.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from diffusers import AutoencoderKL, DDPMScheduler
    from transformers import CLIPTextConfig

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
    printable = (
        list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    )
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


def clip_text_config(vocab_size: int, hidden: int, projection_dim: int) -> CLIPTextConfig:
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


def small_vae(
    block_out_channels: tuple[int, ...], sample_size: int, mid_block_attention: bool = True, **flow: Any
) -> AutoencoderKL:
    """A random-init SD-style VAE (4 latent channels) that downsamples by 2 per level after the
    first; ``flow`` settings (``latent_channels``, ``scaling_factor``, ``shift_factor``, no quant
    convs) make the 16-channel VAE of SD3 and FLUX.1 (:func:`flow_vae`)."""
    from diffusers import AutoencoderKL

    levels = len(block_out_channels)
    settings: dict[str, Any] = {"latent_channels": 4, **flow}
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * levels,
        up_block_types=("UpDecoderBlock2D",) * levels,
        block_out_channels=block_out_channels,
        layers_per_block=1,
        norm_num_groups=8,
        sample_size=sample_size,
        mid_block_add_attention=mid_block_attention,
        **settings,
    )


def flow_vae(block_out_channels: tuple[int, ...], sample_size: int, scaling: float, shift: float) -> AutoencoderKL:
    """A random-init 16-channel VAE without quant convs, as SD3's and FLUX.1's (with their scale
    and shift factors)."""
    return small_vae(
        block_out_channels,
        sample_size,
        latent_channels=16,
        scaling_factor=scaling,
        shift_factor=shift,
        use_quant_conv=False,
        use_post_quant_conv=False,
    )


def flow_scheduler(shift: float = 3.0, dynamic: bool = False) -> Any:
    """``FlowMatchEulerDiscreteScheduler`` as SD3 (static shift 3) or FLUX.1 (dynamic) ship it."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    if dynamic:
        return FlowMatchEulerDiscreteScheduler(
            num_train_timesteps=1000,
            shift=3.0,
            use_dynamic_shifting=True,
            base_shift=0.5,
            max_shift=1.15,
            base_image_seq_len=256,
            max_image_seq_len=4096,
        )
    return FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=shift)


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


def sd_noise_scheduler(prediction_type: str = "epsilon") -> DDPMScheduler:
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


TINY_IMAGE_SIZE = 64  # pixels; the tiny VAE downsamples by 8 like SD's
TINY_TEXT_WIDTH = 32  # hidden width of each tiny CLIP text encoder
TINY_T5_WIDTH = 64  # d_model of the tiny T5 encoder of the flow families


def build_t5_tokenizer(max_length: int = 512) -> Any:
    """A tiny T5 tokenizer (a unigram model from the ``tokenizers`` library, as T5's is): the
    caption words of the tiny CLIP vocabulary are single pieces, anything else falls back to
    characters. Pad 0, EOS 1, UNK 2, as T5."""
    from transformers import T5Tokenizer

    characters = "abcdefghijklmnopqrstuvwxyz0123456789.,;:!?'-()"
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -2.0)]
    vocab += [("\u2581" + word, -1.0) for word in _WORDS]
    vocab += [(c, -5.0) for c in characters] + [("\u2581" + c, -4.0) for c in characters]
    return T5Tokenizer(vocab=vocab, extra_ids=0, model_max_length=max_length)


def t5_encoder_config(vocab_size: int, width: int) -> Any:
    """A two-layer T5 encoder of ``width`` (d_kv 8, feed-forward 2 x width)."""
    from transformers import T5Config

    return T5Config(
        vocab_size=vocab_size,
        d_model=width,
        d_kv=8,
        d_ff=2 * width,
        num_layers=2,
        num_heads=width // 8,
        relative_attention_num_buckets=8,
        dropout_rate=0.0,
        pad_token_id=0,
        eos_token_id=1,
    )


@dataclass
class TinyTextParts:
    """The tokenizers of the flow families' tiny pipelines (one CLIP BPE for both CLIP encoders,
    one T5 unigram) and configs for their encoders."""

    clip_tokenizer: Any
    t5_tokenizer: Any

    def clip_config(self, hidden: int, projection_dim: int) -> CLIPTextConfig:
        return clip_text_config(len(self.clip_tokenizer), hidden, projection_dim)

    def t5_config(self, width: int) -> Any:
        return t5_encoder_config(len(self.t5_tokenizer), width)


def tiny_text_parts(out: Path, seed: int) -> TinyTextParts:
    """Seed the global RNG and write/load the tiny CLIP and T5 tokenizers (flow families)."""
    from transformers import CLIPTokenizer

    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    build_clip_tokenizer_files(out / "tokenizer")
    return TinyTextParts(CLIPTokenizer.from_pretrained(str(out / "tokenizer")), build_t5_tokenizer())


@dataclass
class TinyParts:
    """The components every tiny pipeline shares, built in a fixed order from one seed."""

    tokenizer: Any
    vocab_size: int
    vae: Any
    scheduler: Any
    unet_kwargs: dict


def tiny_shared_parts(out: Path, seed: int, prediction_type: str) -> TinyParts:
    """Seed the global RNG, then write the tokenizer and build the VAE, the DDPM scheduler and
    the two-level UNet settings (the same order for every family, so a seed gives the same
    weights as it always did)."""
    from transformers import CLIPTokenizer

    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    build_clip_tokenizer_files(out / "tokenizer")
    tokenizer = CLIPTokenizer.from_pretrained(str(out / "tokenizer"))
    vae = small_vae((16, 32, 32, 32), TINY_IMAGE_SIZE)
    scheduler = sd_noise_scheduler(prediction_type)
    unet_kwargs = two_level_unet_kwargs(TINY_IMAGE_SIZE // 8, norm_num_groups=8)
    return TinyParts(tokenizer, len(tokenizer), vae, scheduler, unet_kwargs)


def build_tiny_pipeline(
    out_dir: str | Path, family: str = "sd", prediction_type: str = "epsilon", seed: int = 0
) -> Path:
    """Build a random-init tiny pipeline of the registered ``family`` and save it to ``out_dir``
    (``prefdiff make-tiny``). Each family's ``build_tiny`` says what its pipeline holds."""
    from prefdiff.models.base import BACKBONES

    return BACKBONES.get(family).build_tiny(Path(out_dir), prediction_type, seed)
