"""A 2-process gloo run through accelerate equals a 1-process run with the same global batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from ..integration_helpers import (
    assert_same_weights,
    assert_two_processes_equal_one,
    lora_weights,
    metrics,
    two_process_train,
)

pytestmark = pytest.mark.slow

# `prefdiff` under `accelerate launch` with two CPU processes (gloo); the sub-command follows.
TWO_PROCESS_PREFDIFF = [
    sys.executable,
    "-m",
    "accelerate.commands.launch",
    "--multi_gpu",
    "--num_processes=2",
    "--num_machines=1",
    "--mixed_precision=no",
    "--dynamo_backend=no",
    "-m",
    "prefdiff",
]
# The same with FSDP2: each block of the denoiser's _no_split_modules one unit (prefdiff's default
# wrap policy, spelled out here as users would). On CPU accelerate ignores --use_fsdp and prefdiff
# turns FSDP on itself (train/sharding.py).
TWO_PROCESS_FSDP_PREFDIFF = [arg if arg != "--multi_gpu" else "--use_fsdp" for arg in TWO_PROCESS_PREFDIFF[:-2]] + [
    "--fsdp_version=2",
    "--fsdp_auto_wrap_policy=TRANSFORMER_BASED_WRAP",
    "-m",
    "prefdiff",
]


@pytest.mark.parametrize("lora", [True, False], ids=["lora", "full"])
def test_two_processes_equal_one(tiny_sd, shapes_parquet, tmp_path, lora):
    from diffusers import UNet2DConditionModel

    assert_two_processes_equal_one(TWO_PROCESS_PREFDIFF, tiny_sd, shapes_parquet, tmp_path, UNet2DConditionModel, lora)


def test_reference_free_objective_two_processes_equal_one(tiny_sd, shapes_parquet, tmp_path):
    """MaPO, fully fine-tuned: no reference forward and no frozen copy; two processes equal one."""
    from diffusers import UNet2DConditionModel

    single, double = assert_two_processes_equal_one(
        TWO_PROCESS_PREFDIFF, tiny_sd, shapes_parquet, tmp_path, UNet2DConditionModel, False, "objective.name=mapo"
    )
    assert "margin_term" in metrics(double)[0] and "ref_err_w" not in metrics(double)[0]


def test_unpaired_objective_two_processes_equal_one(tiny_sd, shapes_parquet, tmp_path):
    """KTO on pairs converted to labelled images (LoRA): the KL estimate behind the reference point
    is reduced over both processes, so two processes of two images equal one process of four."""
    from diffusers import UNet2DConditionModel

    single, double = assert_two_processes_equal_one(
        TWO_PROCESS_PREFDIFF,
        tiny_sd,
        shapes_parquet,
        tmp_path,
        UNet2DConditionModel,
        True,
        "objective.name=kto",
        "data.unpaired=true",
    )
    rows = [metrics(run) for run in (single, double)]
    assert [r["kl_estimate"] for r in rows[0]] == pytest.approx(
        [r["kl_estimate"] for r in rows[1]], abs=2e-4
    )  # float32 errors cancel
    assert rows[1][-1]["kl_estimate"] != 0.0, "the policy has moved off the reference"


def test_auto_beta_and_winner_guard_two_processes_equal_one(tiny_sd, shapes_parquet, tmp_path):
    """beta=auto finds the same beta on every process (the run's first slots, whoever holds them),
    and the per-pair winner guard does not depend on the split."""
    from diffusers import UNet2DConditionModel

    single, double = assert_two_processes_equal_one(
        TWO_PROCESS_PREFDIFF,
        tiny_sd,
        shapes_parquet,
        tmp_path,
        UNet2DConditionModel,
        True,
        "objective.beta=auto",
        "objective.winner_guard=true",
    )
    found = [json.loads((run / "auto_beta.json").read_text())["beta"] for run in (single, double)]
    assert found[0] == pytest.approx(found[1], rel=1e-6)


def test_cache_split_across_two_processes(tiny_sd, shapes_parquet, tmp_path):
    """`accelerate launch -m prefdiff cache` with two processes: each builds every other shard,
    and the result indexes the same pairs as a one-process build."""
    from prefdiff.data.cache import load_cache_info

    base = ["cache", "--model", str(tiny_sd), "--data", str(shapes_parquet), "--resolution", "32", "--shard-size", "8"]
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1"}
    one = subprocess.run(
        [sys.executable, "-m", "prefdiff", *base, "--out", str(tmp_path / "one")],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert one.returncode == 0, one.stderr[-3000:]
    two = subprocess.run(
        [*TWO_PROCESS_PREFDIFF, *base, "--out", str(tmp_path / "two")],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert two.returncode == 0, two.stderr[-3000:]
    info_one, info_two = load_cache_info(tmp_path / "one"), load_cache_info(tmp_path / "two")
    assert info_two["shards"] == info_one["shards"] and info_two["num_pairs"] == info_one["num_pairs"] > 0
    assert info_two["dropped"] == info_one["dropped"] and info_one["dropped"]["tie"] > 0
    assert (tmp_path / "two" / "report_0.json").exists() and (tmp_path / "two" / "report_1.json").exists()


@pytest.mark.parametrize("lora", [True, False], ids=["lora", "full"])
def test_fsdp_two_processes_equal_one(tiny_sd, shapes_parquet, tmp_path, lora):
    """FSDP2 over 2 gloo processes (policy sharded, and for full fine-tuning the frozen reference
    too) gives the losses, grad norms and final weights of one process with the same global batch;
    the result is written in the single-process format."""
    from diffusers import UNet2DConditionModel

    single, double = assert_two_processes_equal_one(
        TWO_PROCESS_FSDP_PREFDIFF, tiny_sd, shapes_parquet, tmp_path, UNet2DConditionModel, lora
    )
    if lora:
        assert _lora_metadata(double) == _lora_metadata(single)  # the adapter config travels alike
        base, tuned = _sample(tiny_sd), _sample(tiny_sd, double / "lora")
        assert abs(tuned - base).max() > 1e-5 and abs(tuned - _sample(tiny_sd, single / "lora")).max() < 1e-5


def _lora_metadata(run_dir) -> dict:
    """The adapter config saved with the LoRA (peft's target_modules is a set: order-free)."""
    import json

    from safetensors import safe_open

    with safe_open(str(run_dir / "lora" / "pytorch_lora_weights.safetensors"), "pt") as f:
        config = json.loads(f.metadata()["lora_adapter_metadata"])
    return {**config, "unet.target_modules": sorted(config["unet.target_modules"])}


def _sample(pipeline_dir, lora_dir=None):
    """One 2-step 32x32 image ``[1, 32, 32, 3]`` of the pipeline, with the LoRA loaded when given."""
    import torch
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(str(pipeline_dir))
    pipe.set_progress_bar_config(disable=True)
    if lora_dir is not None:
        pipe.load_lora_weights(str(lora_dir))
    generator = torch.Generator().manual_seed(0)
    return pipe(
        "a red circle", num_inference_steps=2, height=32, width=32, output_type="np", generator=generator
    ).images


@pytest.mark.parametrize("lora", [True, False], ids=["lora", "full"])
def test_fsdp_resumed_run_equals_uninterrupted(tiny_sd, shapes_parquet, tmp_path, lora):
    """Under FSDP2, 4 steps straight vs a run resumed from the straight run's step-2 checkpoint:
    the same final weights. The checkpoint holds accelerate's sharded model and optimizer state
    (torch distributed checkpoint); LoRA dropout makes the RNG states matter, warm-up the
    scheduler; grad clipping is on."""
    common = [
        f"lora.enabled={str(lora).lower()}",
        "lora.dropout=0.1",
        "optim.warmup_steps=3",
        "optim.max_grad_norm=0.5",
        "train.checkpoint_every=2",
        "train.keep_last=2",
        "train.max_steps=4",
    ]
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    two_process_train(TWO_PROCESS_FSDP_PREFDIFF, tiny_sd, shapes_parquet, straight, *common)
    checkpoint = straight / "checkpoints" / "step_0000002"
    assert (checkpoint / "pytorch_model_fsdp_0").is_dir() and (checkpoint / "optimizer_0").is_dir()
    two_process_train(TWO_PROCESS_FSDP_PREFDIFF, tiny_sd, shapes_parquet, resumed, *common, f"--resume={checkpoint}")
    assert [r["step"] for r in metrics(resumed)] == [3, 4]
    assert metrics(resumed)[-1]["loss"] == pytest.approx(metrics(straight)[-1]["loss"], rel=1e-6)
    if lora:
        assert_same_weights(lora_weights(resumed), lora_weights(straight), atol=1e-7)
    else:
        from diffusers import UNet2DConditionModel

        a = UNet2DConditionModel.from_pretrained(str(resumed / "unet")).state_dict()
        b = UNet2DConditionModel.from_pretrained(str(straight / "unet")).state_dict()
        assert_same_weights(a, b, atol=1e-7)
