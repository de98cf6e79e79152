"""LoRA adapters on a denoiser (peft), and their export in the family's diffusers format."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from prefdiff.config import LoraConfig

if TYPE_CHECKING:
    from prefdiff.models.base import Denoiser

ADAPTER_FILE = "lora_adapter.safetensors"  # peft-format keys, used inside checkpoints


def add_lora(denoiser: Denoiser, config: LoraConfig, default_targets: Sequence[str] = ()) -> None:
    """Inject LoRA adapters into ``denoiser``; only their weights require grad, in fp32.

    ``config.target_modules`` names the modules (suffixes); when it is unset the family's
    ``default_targets`` are used. peft initialises ``B`` to zero, so the adapted denoiser
    starts equal to the base.
    """
    from peft import LoraConfig as PeftLoraConfig

    targets = list(config.target_modules) if config.target_modules is not None else list(default_targets)
    if not targets:
        raise ValueError("lora.target_modules is unset and the model family names no default LoRA targets")
    denoiser.requires_grad_(False)
    denoiser.add_adapter(
        PeftLoraConfig(
            r=config.rank,
            lora_alpha=config.alpha,
            lora_dropout=config.dropout,
            init_lora_weights="gaussian",
            target_modules=targets,
        )
    )
    trainable = [p for p in denoiser.parameters() if p.requires_grad]
    if not trainable:
        raise ValueError(f"lora.target_modules={targets} matched no module of the {type(denoiser).__name__}")
    for param in trainable:
        param.data = param.data.float()


def lora_state_dict(denoiser: Denoiser) -> dict[str, torch.Tensor]:
    """The adapter weights in peft's key format."""
    from peft.utils import get_peft_model_state_dict

    return {k: v.detach().cpu().contiguous() for k, v in get_peft_model_state_dict(denoiser).items()}


def load_lora_state_dict(denoiser: Denoiser, state: dict[str, torch.Tensor]) -> None:
    from peft.utils import set_peft_model_state_dict

    result = set_peft_model_state_dict(denoiser, state)
    unexpected = getattr(result, "unexpected_keys", None)
    if unexpected:
        raise ValueError(f"LoRA state has keys the {type(denoiser).__name__}'s adapters do not: {unexpected[:3]}")


def save_lora_diffusers(
    pipeline_class: Any, denoiser_name: str, denoiser: Denoiser, out_dir: str | Path, legacy_keys: bool = True
) -> Path:
    """Write ``pytorch_lora_weights.safetensors`` loadable by ``pipeline.load_lora_weights(dir)``:
    ``pipeline_class.save_lora_weights`` with ``{denoiser_name}_lora_layers`` (``unet`` or
    ``transformer``). ``legacy_keys`` converts peft's keys to the older diffusers names
    (``lora.down``/``lora.up``) the UNet loaders expect; the transformer loaders (SD3, FLUX.1)
    read peft's ``lora_A``/``lora_B`` keys as they are, and would drop converted ones."""
    from diffusers.utils import convert_state_dict_to_diffusers

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    layers = lora_state_dict(denoiser)
    if legacy_keys:
        layers = convert_state_dict_to_diffusers(layers)
    # the adapter config (alpha, rank, targets) travels with the weights: without it
    # load_lora_weights applies the update at scale 1 instead of alpha / rank
    pipeline_class.save_lora_weights(
        save_directory=str(out),
        safe_serialization=True,
        **{
            f"{denoiser_name}_lora_layers": layers,
            f"{denoiser_name}_lora_adapter_metadata": denoiser.peft_config["default"].to_dict(),
        },
    )
    return out
