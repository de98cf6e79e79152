"""Helpers for training tests: a small config and weight comparisons."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file

from prefdiff.config import Config, load_config


def tiny_config(model: Path, data: Path, out: Path, *overrides: str) -> Config:
    return load_config(
        None,
        [
            f"model.path={model}",
            f"data.path={data}",
            f"output_dir={out}",
            "data.resolution=32",
            "train.max_steps=2",
            "train.batch_size=2",
            "train.checkpoint_every=0",
            "train.report_to=none",
            "optim.lr=1e-3",
            "optim.max_grad_norm=null",
            *overrides,
        ],
    )


def lora_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run_dir / "lora" / "pytorch_lora_weights.safetensors"))


def metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], atol: float = 1e-6) -> None:
    assert a.keys() == b.keys()
    worst = max((x - b[k]).abs().max().item() for k, x in a.items())
    assert worst <= atol, f"weights differ by up to {worst}"
