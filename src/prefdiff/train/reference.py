"""The reference model: LoRA with adapters disabled, or a frozen copy for full fine-tuning.

Either way the reference costs one no-grad forward over the whole ``[winners; losers]`` batch.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Protocol

import torch

from prefdiff.models.base import Backbone, Conditioning


class Reference(Protocol):
    def errors(
        self, backbone: Backbone, noisy: torch.Tensor, timesteps: torch.Tensor, cond: Conditioning, target: torch.Tensor
    ) -> torch.Tensor:
        """Per-sample reference errors ``[N]`` (no grad)."""
        ...


class AdapterDisabledReference:
    """The policy UNet itself with its LoRA adapters switched off: no second copy in memory."""

    def __init__(self, unet: torch.nn.Module, autocast: Callable[[], AbstractContextManager] = nullcontext) -> None:
        from peft.tuners.tuners_utils import BaseTunerLayer

        self.unet = unet  # the unwrapped module (not the DDP wrapper)
        self.autocast = autocast
        # Toggle the adapter layers found once, rather than walking every module of the UNet at
        # each step as ``unet.disable_adapters()`` does (4x cheaper on the tiny UNet).
        self.adapter_layers = [m for m in unet.modules() if isinstance(m, BaseTunerLayer)]
        if not self.adapter_layers:
            raise ValueError("the UNet has no LoRA adapters to disable")

    def _set_adapters(self, enabled: bool) -> None:
        for layer in self.adapter_layers:
            layer.enable_adapters(enabled)

    @torch.no_grad()
    def errors(self, backbone: Backbone, noisy: torch.Tensor, timesteps: torch.Tensor, cond: Conditioning, target: torch.Tensor) -> torch.Tensor:
        self._set_adapters(False)
        try:
            with self.autocast():
                return backbone.denoising_errors(self.unet, noisy, timesteps, cond, target)
        finally:
            self._set_adapters(True)


class FrozenCopyReference:
    """A frozen copy of the initial UNet (full fine-tuning), held in ``dtype``."""

    def __init__(self, unet: torch.nn.Module, dtype: torch.dtype, autocast: Callable[[], AbstractContextManager] = nullcontext) -> None:
        self.unet = copy.deepcopy(unet).to(dtype=dtype).eval().requires_grad_(False)
        # Normalisation layers run in fp32 under autocast, with the policy's fp32 weights: the
        # reference must use the same fp32 weights, or it differs from the policy at step 0.
        for module in self.unet.modules():
            if isinstance(module, torch.nn.GroupNorm | torch.nn.LayerNorm):
                module.float()
        self.autocast = autocast

    @torch.no_grad()
    def errors(self, backbone: Backbone, noisy: torch.Tensor, timesteps: torch.Tensor, cond: Conditioning, target: torch.Tensor) -> torch.Tensor:
        with self.autocast():
            return backbone.denoising_errors(self.unet, noisy, timesteps, cond, target)
