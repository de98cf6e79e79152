"""The training loop's invariances on the flow families: accumulation, exact resume, and a
2-process run equal to a 1-process one (the UNet versions are in test_train and test_distributed)."""

from __future__ import annotations

import pytest
import torch

from prefdiff.models import load_backbone
from prefdiff.models.lora import lora_state_dict
from prefdiff.train.loop import train

from ..integration_helpers import (
    assert_same_weights,
    assert_two_processes_equal_one,
    lora_weights,
    metrics,
    tiny_config,
)
from .test_distributed import TWO_PROCESS_FSDP_PREFDIFF, TWO_PROCESS_PREFDIFF

pytestmark = pytest.mark.slow

T5_TOKENS = "model.max_sequence_length=8"


def test_one_flow_dpo_step_changes_lora_and_not_base(tiny_flux, shapes_parquet, tmp_path):
    backbone = load_backbone(tiny_flux)
    before = {k: v.clone() for k, v in backbone.denoiser.state_dict().items()}
    result = train(
        tiny_config(tiny_flux, shapes_parquet, tmp_path / "run", "train.max_steps=1", T5_TOKENS), backbone=backbone
    )
    lora = lora_state_dict(backbone.denoiser)
    assert any("lora_B" in k and v.abs().max() > 0 for k, v in lora.items())
    after = {k.replace(".base_layer", ""): v for k, v in backbone.denoiser.state_dict().items() if "lora_" not in k}
    assert after.keys() == before.keys() and all(torch.equal(before[k], after[k]) for k in before)
    row = metrics(result.run_dir)[0]
    assert row["loss"] == pytest.approx(0.693147, abs=1e-4)
    assert 0.0 <= row["negative_margin_share"] <= 1.0


@pytest.mark.parametrize("objective", ["dpo", "sft"])
def test_flow_accumulation_1x8_equals_8x1(tiny_sd3, shapes_parquet, tmp_path, objective):
    """Eight pairs per step as 1x8 or 8x1: the same update (eps and beta as in test_train)."""
    runs = {}
    for batch, accum in ((1, 8), (8, 1)):
        out = tmp_path / f"b{batch}a{accum}"
        train(
            tiny_config(
                tiny_sd3,
                shapes_parquet,
                out,
                f"train.batch_size={batch}",
                f"train.grad_accum_steps={accum}",
                f"objective.name={objective}",
                "optim.eps=1e-2",
                "objective.beta=500",
                T5_TOKENS,
            )
        )
        runs[(batch, accum)] = (lora_weights(out), metrics(out))
    (w_a, rows_a), (w_b, rows_b) = runs[(1, 8)], runs[(8, 1)]
    assert_same_weights(w_a, w_b, atol=2e-6)
    for a, b in zip(rows_a, rows_b, strict=True):
        assert a["grad_norm"] == pytest.approx(b["grad_norm"], rel=1e-4)
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-4)


def test_flow_resumed_run_equals_uninterrupted(tiny_flux, shapes_parquet, tmp_path):
    """4 steps straight vs 2 + resume to 4, LoRA dropout and warm-up on: the same weights."""
    common = ("train.checkpoint_every=2", "lora.dropout=0.1", "optim.warmup_steps=3", T5_TOKENS)
    train(tiny_config(tiny_flux, shapes_parquet, tmp_path / "straight", "train.max_steps=4", *common))
    train(tiny_config(tiny_flux, shapes_parquet, tmp_path / "resumed", "train.max_steps=2", *common))
    result = train(
        tiny_config(tiny_flux, shapes_parquet, tmp_path / "resumed", "train.max_steps=4", *common), resume="latest"
    )
    assert result.state.global_step == 4
    assert_same_weights(lora_weights(tmp_path / "resumed"), lora_weights(tmp_path / "straight"), atol=1e-7)


@pytest.mark.parametrize("lora", [True, False], ids=["lora", "full"])
def test_flow_two_processes_equal_one(tiny_sd3, shapes_parquet, tmp_path, lora):
    from diffusers import SD3Transformer2DModel

    assert_two_processes_equal_one(
        TWO_PROCESS_PREFDIFF, tiny_sd3, shapes_parquet, tmp_path, SD3Transformer2DModel, lora, T5_TOKENS
    )


def test_flux_fsdp_full_fine_tune_equals_one_process(tiny_flux, shapes_parquet, tmp_path):
    """FSDP2 on the FLUX transformer (its double and single blocks, _no_split_modules, are the
    units; the frozen reference is sharded alike) equals one process of the same global batch."""
    from diffusers import FluxTransformer2DModel

    assert_two_processes_equal_one(
        TWO_PROCESS_FSDP_PREFDIFF, tiny_flux, shapes_parquet, tmp_path, FluxTransformer2DModel, False, T5_TOKENS
    )
