"""Helpers for training tests: a small config and weight comparisons."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
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


def two_process_train(launch: list[str], model: Path, data: Path, out: Path, *overrides: str) -> None:
    """``prefdiff train`` under ``launch`` (2 CPU processes over gloo) with :func:`tiny_config`'s
    settings at batch 2 per process."""
    args = [
        f"model.path={model}",
        f"data.path={data}",
        f"output_dir={out}",
        "data.resolution=32",
        "train.batch_size=2",
        "train.checkpoint_every=0",
        "train.report_to=none",
        "optim.lr=1e-3",
        "optim.max_grad_norm=null",
        *overrides,
    ]
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1"}
    result = subprocess.run([*launch, "train", *args], capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stderr[-4000:]


def assert_two_processes_equal_one(
    launch: list[str], model: Path, data: Path, root: Path, denoiser_class: Any, lora: bool, *overrides: str
) -> tuple[Path, Path]:
    """One process of batch 4 and two of batch 2 (under ``launch``), 2 steps: the same losses, grad
    norms and final weights (the LoRA, or the denoiser saved by a full fine-tune as
    ``denoiser_class``). eps and beta as in the accumulation test: well-conditioned updates,
    round-off not amplified. Returns the two run directories."""
    from prefdiff.train.loop import train

    common = ["train.max_steps=2", "optim.eps=1e-2", "objective.beta=500", f"lora.enabled={str(lora).lower()}"]
    common += ([] if lora else ["optim.lr=1e-4"]) + list(overrides)
    single, double = root / "single", root / "double"
    train(tiny_config(model, data, single, "train.batch_size=4", *common))
    two_process_train(launch, model, data, double, *common)
    for a, b in zip(metrics(double), metrics(single), strict=True):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-4)
        assert a["grad_norm"] == pytest.approx(b["grad_norm"], rel=1e-4)
    if lora:
        assert_same_weights(lora_weights(double), lora_weights(single), atol=1e-6)
    else:
        folder = "unet" if denoiser_class.__name__ == "UNet2DConditionModel" else "transformer"
        a = denoiser_class.from_pretrained(str(double / folder)).state_dict()
        b = denoiser_class.from_pretrained(str(single / folder)).state_dict()
        assert_same_weights(a, b, atol=1e-6)
    return single, double


def write_images_jsonl(pairs_parquet: Path, folder: Path, count: int = 12) -> Path:
    """Winners and losers of the first pairs as PNG files beside an images.jsonl."""
    from prefdiff.data.dataset import load_pairs

    pairs = load_pairs(load_config(None, [f"data.path={pairs_parquet}"]).data)[: count // 2]
    (folder / "img").mkdir(parents=True)
    lines = []
    for index, pair in enumerate(pairs):
        for side, desirable in (("winner", True), ("loser", False)):
            name = f"img/{index}_{side}.png"
            (folder / name).write_bytes(getattr(pair, side))
            lines.append({"prompt": pair.prompt, "image": name, "desirable": desirable})
    (folder / "images.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    return folder / "images.jsonl"
