"""LoRA or full fine-tuning as one object: how the denoiser is made trainable, what the
reference is, what a checkpoint holds, and what the run leaves behind.

The loop asks the strategy and never branches on ``lora.enabled`` itself.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any, Protocol

import torch

from prefdiff.config import LoraConfig
from prefdiff.models.base import Backbone, Denoiser
from prefdiff.train.reference import (
    AdapterDisabledReference,
    Autocast,
    FrozenCopyReference,
    Reference,
)
from prefdiff.train.sharding import Shard, gather_whole, unsharded


class FineTuneStrategy(Protocol):
    """What differs between adapter training and full fine-tuning."""

    def result_path(self, backbone: Backbone, run_dir: Path) -> Path:
        """Where the run's result goes (``RUN/lora`` or ``RUN/<denoiser_name>``)."""
        ...

    def prepare(self, backbone: Backbone, device: torch.device, weight_dtype: torch.dtype) -> list[torch.nn.Parameter]:
        """Make ``backbone.denoiser`` trainable on ``device``; return its trainable parameters."""
        ...

    def reference(
        self, backbone: Backbone, weight_dtype: torch.dtype, autocast: Autocast, shard: Shard = unsharded
    ) -> Reference:
        """The frozen reference of the (prepared, not yet sharded) denoiser; ``shard`` shards a
        module like the policy (the identity unless the run is FSDP2)."""
        ...

    def register_checkpoint_hooks(self, accelerator: Any) -> None:
        """Adjust what accelerate's save_state/load_state write and read for the denoiser."""
        ...

    def save_result(self, backbone: Backbone, denoiser: Denoiser, run_dir: Path, is_main_process: bool) -> Path:
        """Write the result in the family's diffusers format. Every process calls it (gathering a
        sharded denoiser is collective); only the main process writes."""
        ...


class LoraStrategy:
    """Adapters on the denoiser (fp32), the base held in the run's precision; the reference is the
    same network with adapters disabled; checkpoints and the result hold the adapter alone (under
    FSDP2 a checkpoint holds accelerate's shards of the whole denoiser)."""

    def __init__(self, config: LoraConfig) -> None:
        self.config = config

    def result_path(self, backbone: Backbone, run_dir: Path) -> Path:
        return run_dir / "lora"

    def prepare(self, backbone: Backbone, device: torch.device, weight_dtype: torch.dtype) -> list[torch.nn.Parameter]:
        from prefdiff.models.lora import add_lora

        denoiser = backbone.denoiser
        if weight_dtype != torch.float32:
            denoiser.to(device, dtype=weight_dtype)
        else:
            denoiser.to(device)
        add_lora(denoiser, self.config, backbone.lora_target_modules)
        return [p for p in denoiser.parameters() if p.requires_grad]

    def reference(
        self, backbone: Backbone, weight_dtype: torch.dtype, autocast: Autocast, shard: Shard = unsharded
    ) -> Reference:
        return AdapterDisabledReference(backbone.denoiser, autocast)  # the policy itself, sharded with it

    def register_checkpoint_hooks(self, accelerator: Any) -> None:
        from prefdiff.train.checkpoint import register_lora_hooks

        register_lora_hooks(accelerator)

    def save_result(self, backbone: Backbone, denoiser: Denoiser, run_dir: Path, is_main_process: bool) -> Path:
        from prefdiff.models.lora import add_lora

        def build() -> Denoiser:
            whole = backbone.denoiser_class().from_config(denoiser.config)
            add_lora(whole, self.config, backbone.lora_target_modules)
            return whole

        out = self.result_path(backbone, run_dir)
        # sharded: gather the adapters only, into a copy whose frozen base stays on 'meta'
        whole = gather_whole(denoiser, build, trainable_only=True, is_main_process=is_main_process)
        if whole is not None and is_main_process:
            backbone.save_lora(whole, out)
        return out


class FullStrategy:
    """Every denoiser weight trains in fp32; the reference is a frozen copy in the run's precision."""

    def result_path(self, backbone: Backbone, run_dir: Path) -> Path:
        return run_dir / backbone.denoiser_name

    def prepare(self, backbone: Backbone, device: torch.device, weight_dtype: torch.dtype) -> list[torch.nn.Parameter]:
        denoiser = backbone.denoiser.to(device).float().requires_grad_(True)
        return list(denoiser.parameters())

    def reference(
        self, backbone: Backbone, weight_dtype: torch.dtype, autocast: Autocast, shard: Shard = unsharded
    ) -> Reference:
        return FrozenCopyReference(backbone.denoiser, weight_dtype, autocast, shard)

    def register_checkpoint_hooks(self, accelerator: Any) -> None:
        return None  # accelerate saves the whole model

    def save_result(self, backbone: Backbone, denoiser: Denoiser, run_dir: Path, is_main_process: bool) -> Path:
        out = self.result_path(backbone, run_dir)
        build = partial(backbone.denoiser_class().from_config, denoiser.config)
        whole = gather_whole(denoiser, build, trainable_only=False, is_main_process=is_main_process)
        if whole is not None and is_main_process:
            whole.save_pretrained(str(out))
        return out


def build_strategy(config: LoraConfig) -> FineTuneStrategy:
    """``lora.enabled``: adapters (:class:`LoraStrategy`) or full fine-tuning (:class:`FullStrategy`)."""
    return LoraStrategy(config) if config.enabled else FullStrategy()
