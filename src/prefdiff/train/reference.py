"""The reference model: LoRA with adapters disabled, or a frozen module for full fine-tuning.

Either way the reference costs one no-grad forward over the whole ``[winners; losers]`` batch.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Protocol

import torch

from prefdiff.models.base import Backbone, Denoiser, DenoisingProblem

Autocast = Callable[[], AbstractContextManager]


class Reference(Protocol):
    def errors(self, backbone: Backbone, problem: DenoisingProblem) -> torch.Tensor:
        """Per-sample reference errors ``[N]`` (no grad)."""
        ...


class AdapterDisabledReference:
    """The policy denoiser itself with its LoRA adapters switched off: no second copy in memory."""

    def __init__(self, denoiser: Denoiser, autocast: Autocast = nullcontext) -> None:
        from peft.tuners.tuners_utils import BaseTunerLayer

        self.denoiser = denoiser  # the unwrapped module (not the DDP wrapper)
        self.autocast = autocast
        # Toggle the adapter layers found once, rather than walking every module of the
        # denoiser at each step as ``disable_adapters()`` does (4x cheaper on the tiny UNet).
        self.adapter_layers = [m for m in denoiser.modules() if isinstance(m, BaseTunerLayer)]
        if not self.adapter_layers:
            raise ValueError(f"the {type(denoiser).__name__} has no LoRA adapters to disable")

    def _set_adapters(self, enabled: bool) -> None:
        for layer in self.adapter_layers:
            layer.enable_adapters(enabled)

    @torch.no_grad()
    def errors(self, backbone: Backbone, problem: DenoisingProblem) -> torch.Tensor:
        self._set_adapters(False)
        try:
            with self.autocast():
                return backbone.errors(self.denoiser, problem)
        finally:
            self._set_adapters(True)


class ModuleReference:
    """A frozen denoiser as the reference, used as given (no copy): the base model of a fully
    fine-tuned one, for example."""

    def __init__(self, denoiser: Denoiser, autocast: Autocast = nullcontext) -> None:
        self.denoiser = denoiser
        self.autocast = autocast

    @torch.no_grad()
    def errors(self, backbone: Backbone, problem: DenoisingProblem) -> torch.Tensor:
        with self.autocast():
            return backbone.errors(self.denoiser, problem)


class FrozenCopyReference(ModuleReference):
    """A frozen copy of the initial denoiser (full fine-tuning), held in ``dtype``.

    ``shard`` is applied to the copy: under FSDP2 it shards the copy into the same units as the
    policy, so no process holds the whole reference (the copy is taken before the policy is
    sharded, from its whole initial weights).
    """

    def __init__(
        self,
        denoiser: Denoiser,
        dtype: torch.dtype,
        autocast: Autocast = nullcontext,
        shard: Callable[[Denoiser], Denoiser] = lambda module: module,
    ) -> None:
        frozen = norms_in_fp32(copy.deepcopy(denoiser).to(dtype=dtype).eval().requires_grad_(False))
        super().__init__(shard(frozen), autocast)


def norms_in_fp32(denoiser: Denoiser) -> Denoiser:
    """``denoiser`` with its normalisation layers back in fp32, in place. They run in fp32 under
    autocast with the policy's fp32 weights: a frozen reference must use the same fp32 weights,
    or it differs from the policy at step 0."""
    for module in denoiser.modules():
        if isinstance(module, torch.nn.GroupNorm | torch.nn.LayerNorm):
            module.float()
    return denoiser
