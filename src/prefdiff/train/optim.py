"""Optimizers (AdamW, Adafactor, 8-bit AdamW) and warm-up + constant/cosine schedules."""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch

from prefdiff.config import OptimConfig
from prefdiff.errors import ConfigError


def build_optimizer(params: Iterable[torch.nn.Parameter], config: OptimConfig) -> torch.optim.Optimizer:
    params = list(params)
    if config.name == "adamw":
        return torch.optim.AdamW(
            params, lr=config.lr, betas=(config.beta1, config.beta2), eps=config.eps, weight_decay=config.weight_decay
        )
    if config.name == "adafactor":
        from transformers.optimization import Adafactor

        # Fixed learning rate (the paper's SDXL setting): no relative step, no parameter scaling.
        return Adafactor(
            params,
            lr=config.lr,
            scale_parameter=False,
            relative_step=False,
            warmup_init=False,
            weight_decay=config.weight_decay,
        )
    if config.name == "adamw8bit":
        try:
            import bitsandbytes as bnb
        except ImportError:
            raise ConfigError("optim.name=adamw8bit needs bitsandbytes: pip install 'prefdiff[bnb]'") from None
        return bnb.optim.AdamW8bit(
            params, lr=config.lr, betas=(config.beta1, config.beta2), eps=config.eps, weight_decay=config.weight_decay
        )
    raise ConfigError(f"config key 'optim.name': unknown optimizer {config.name!r}")


def lr_lambda(step: int, warmup_steps: int, total_steps: int, schedule: str) -> float:
    """Multiplier of the peak lr at optimizer step ``step``: linear warm-up, then constant or cosine to 0."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def build_scheduler(
    optimizer: torch.optim.Optimizer, config: OptimConfig, total_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    warmup, schedule = config.warmup_steps, config.scheduler
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_lambda(step, warmup, total_steps, schedule))
