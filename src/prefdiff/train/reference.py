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
        self.unet = unet  # the unwrapped module (not the DDP wrapper)
        self.autocast = autocast

    @torch.no_grad()
    def errors(self, backbone: Backbone, noisy: torch.Tensor, timesteps: torch.Tensor, cond: Conditioning, target: torch.Tensor) -> torch.Tensor:
        self.unet.disable_adapters()
        try:
            with self.autocast():
                return backbone.denoising_errors(self.unet, noisy, timesteps, cond, target)
        finally:
            self.unet.enable_adapters()


class FrozenCopyReference:
    """A frozen copy of the initial UNet (full fine-tuning), held in ``dtype``."""

    def __init__(self, unet: torch.nn.Module, dtype: torch.dtype, autocast: Callable[[], AbstractContextManager] = nullcontext) -> None:
        self.unet = copy.deepcopy(unet).to(dtype=dtype).eval().requires_grad_(False)
        self.autocast = autocast

    @torch.no_grad()
    def errors(self, backbone: Backbone, noisy: torch.Tensor, timesteps: torch.Tensor, cond: Conditioning, target: torch.Tensor) -> torch.Tensor:
        with self.autocast():
            return backbone.denoising_errors(self.unet, noisy, timesteps, cond, target)
