"""A 2-process gloo run through accelerate equals a 1-process run with the same global batch."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from .helpers import assert_same_weights, lora_weights, metrics, tiny_config

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("lora", [True, False], ids=["lora", "full"])
def test_two_processes_equal_one(tiny_sd, shapes_parquet, tmp_path, lora):
    from prefdiff.train.loop import train

    # eps and beta as in the accumulation test: well-conditioned updates, round-off not amplified
    common = ["train.max_steps=2", "optim.eps=1e-2", "objective.beta=500", f"lora.enabled={str(lora).lower()}"]
    if not lora:
        common.append("optim.lr=1e-4")
    single = tmp_path / "single"
    train(tiny_config(tiny_sd, shapes_parquet, single, "train.batch_size=4", *common))

    double = tmp_path / "double"
    args = [
        f"model.path={tiny_sd}", f"data.path={shapes_parquet}", f"output_dir={double}", "data.resolution=32",
        "train.batch_size=2", "train.checkpoint_every=0", "train.report_to=none", "optim.lr=1e-3",
        "optim.max_grad_norm=null", *common,
    ]
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
         "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
         "-m", "prefdiff", "train", *args],
        capture_output=True, text=True, timeout=600, env=env,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    for a, b in zip(metrics(double), metrics(single), strict=True):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-4)
        assert a["grad_norm"] == pytest.approx(b["grad_norm"], rel=1e-4)
    if lora:
        assert_same_weights(lora_weights(double), lora_weights(single), atol=1e-6)
    else:
        from diffusers import UNet2DConditionModel

        a = UNet2DConditionModel.from_pretrained(str(double / "unet")).state_dict()
        b = UNet2DConditionModel.from_pretrained(str(single / "unet")).state_dict()
        assert_same_weights(a, b, atol=1e-6)
