"""LoRA adapters on the UNet (peft), and their export in the diffusers format."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from prefdiff.config import LoraConfig

ADAPTER_FILE = "lora_adapter.safetensors"  # peft-format keys, used inside checkpoints


def add_lora(unet: torch.nn.Module, config: LoraConfig) -> None:
    """Inject LoRA adapters into ``unet``; only their weights require grad, in fp32.

    peft initialises ``B`` to zero, so the adapted UNet starts equal to the base.
    """
    from peft import LoraConfig as PeftLoraConfig

    unet.requires_grad_(False)
    unet.add_adapter(
        PeftLoraConfig(
            r=config.rank,
            lora_alpha=config.alpha,
            lora_dropout=config.dropout,
            init_lora_weights="gaussian",
            target_modules=list(config.target_modules),
        )
    )
    trainable = [p for p in unet.parameters() if p.requires_grad]
    if not trainable:
        raise ValueError(f"lora.target_modules={config.target_modules} matched no module of the UNet")
    for param in trainable:
        param.data = param.data.float()


def lora_state_dict(unet: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The adapter weights in peft's key format."""
    from peft.utils import get_peft_model_state_dict

    return {k: v.detach().cpu().contiguous() for k, v in get_peft_model_state_dict(unet).items()}


def load_lora_state_dict(unet: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    from peft.utils import set_peft_model_state_dict

    result = set_peft_model_state_dict(unet, state)
    unexpected = getattr(result, "unexpected_keys", None)
    if unexpected:
        raise ValueError(f"LoRA state has keys the UNet's adapters do not: {unexpected[:3]}")


def save_lora_diffusers(pipeline_class: Any, unet: torch.nn.Module, out_dir: str | Path) -> Path:
    """Write ``pytorch_lora_weights.safetensors`` loadable by ``pipeline.load_lora_weights(dir)``."""
    from diffusers.utils import convert_state_dict_to_diffusers

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    layers = convert_state_dict_to_diffusers(lora_state_dict(unet))
    # the adapter config (alpha, rank, targets) travels with the weights: without it
    # load_lora_weights applies the update at scale 1 instead of alpha / rank
    pipeline_class.save_lora_weights(
        save_directory=str(out),
        unet_lora_layers=layers,
        unet_lora_adapter_metadata=unet.peft_config["default"].to_dict(),
        safe_serialization=True,
    )
    return out
