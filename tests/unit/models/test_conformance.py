"""Every registered model family behaves the same at the seams. A family joins this test by
its tiny-pipeline fixture's name in FAMILY_FIXTURES; the test refuses a registered family that
has none, so a new family cannot skip it."""

from __future__ import annotations

import math

import pytest
import torch

from prefdiff.config import LoraConfig
from prefdiff.data.batch import LatentStats, PairBatch
from prefdiff.models import BACKBONES, load_backbone
from prefdiff.models.lora import add_lora
from prefdiff.objectives import DPOObjective
from prefdiff.train.reference import AdapterDisabledReference
from prefdiff.train.step import StepContext, micro_batch_loss

FAMILY_FIXTURES = {"sd": "tiny_sd", "sdxl": "tiny_sdxl", "sd3": "tiny_sd3", "flux": "tiny_flux"}
RESOLUTION = 32
PAIRS = 3


def test_every_registered_family_is_covered():
    assert set(BACKBONES.names()) == set(FAMILY_FIXTURES)


@pytest.fixture(params=sorted(FAMILY_FIXTURES))
def backbone(request):
    return load_backbone(request.getfixturevalue(FAMILY_FIXTURES[request.param]))


def _cached_batch(backbone, std: float = 0.0, slots=None) -> PairBatch:
    """``PAIRS`` cached pairs whose winner and loser latents are equal (std 0: no sampling noise)."""
    shape = (PAIRS, *backbone.latent_shape(RESOLUTION))
    torch.manual_seed(0)
    mean = torch.randn(shape)
    cond = backbone.encode_prompts(["a red circle", "a blue square", "a green star"])
    return PairBatch(
        slots=slots or [10, 11, 12],
        labels=torch.ones(PAIRS),
        original_size=torch.tensor([[RESOLUTION, RESOLUTION]] * 2 * PAIRS),
        crop_top_left=torch.zeros(2 * PAIRS, 2, dtype=torch.long),
        prompt_cond=cond,
        winner_latents=LatentStats(mean, torch.full(shape, std)),
        loser_latents=LatentStats(mean.clone(), torch.full(shape, std)),
    )


def test_problem_shapes_and_errors(backbone):
    problem = backbone.denoising_problem(_cached_batch(backbone, std=0.1), 0, RESOLUTION, torch.device("cpu"))
    images = 2 * PAIRS
    latent = backbone.latent_shape(RESOLUTION)
    assert problem.noisy.shape == problem.target.shape == (images, *latent)
    assert problem.timesteps.shape == (images,) and problem.has_losers
    assert all(value.shape[0] == images for value in problem.conditioning.values())
    errors = backbone.errors(backbone.denoiser, problem)
    assert errors.shape == (images,) and torch.isfinite(errors).all()
    winners, losers = problem.split(errors)
    assert winners.shape == losers.shape == (PAIRS,)
    alone = backbone.denoising_problem(_cached_batch(backbone), 0, RESOLUTION, torch.device("cpu"), with_losers=False)
    assert alone.noisy.shape[0] == PAIRS and not alone.has_losers and alone.split(torch.zeros(PAIRS))[1] is None


def test_one_noise_draw_and_timestep_per_pair(backbone):
    """Equal winner and loser latents give equal noisy inputs: noise and timestep are drawn once
    per pair. Pairs differ from each other, and a pair's draw depends on its slot alone."""
    batch = _cached_batch(backbone)
    problem = backbone.denoising_problem(batch, 0, RESOLUTION, torch.device("cpu"))
    assert torch.equal(problem.timesteps[:PAIRS], problem.timesteps[PAIRS:])
    assert torch.equal(problem.noisy[:PAIRS], problem.noisy[PAIRS:])
    assert torch.equal(problem.target[:PAIRS], problem.target[PAIRS:])
    assert not torch.equal(problem.noisy[0], problem.noisy[1])
    shifted = backbone.denoising_problem(
        _cached_batch(backbone, slots=[12, 10, 11]), 0, RESOLUTION, torch.device("cpu")
    )
    # the latents stayed in place; only slot 12's draw moved to position 0 (so its noise differs from position 0's)
    assert not torch.equal(shifted.noisy[0], problem.noisy[0])
    again = backbone.denoising_problem(batch, 0, RESOLUTION, torch.device("cpu"))
    assert torch.equal(again.noisy, problem.noisy)


def test_dpo_loss_is_ln2_at_initialisation(backbone):
    add_lora(backbone.denoiser, LoraConfig(rank=4, alpha=4), backbone.lora_target_modules)
    ctx = StepContext(
        backbone,
        DPOObjective(beta=5000.0),
        AdapterDisabledReference(backbone.denoiser),
        0,
        RESOLUTION,
        torch.device("cpu"),
    )
    out = micro_batch_loss(ctx, backbone.denoiser, _cached_batch(backbone, std=0.1))
    assert out.loss.item() == pytest.approx(math.log(2), abs=1e-5)
    assert out.metrics["implicit_acc"].item() == 0.5


def test_saved_lora_loads_into_the_family_pipeline_and_changes_it(backbone, tmp_path):
    problem = backbone.denoising_problem(_cached_batch(backbone, std=0.1), 0, RESOLUTION, torch.device("cpu"))
    pipeline_class = backbone.pipeline_class()
    with torch.no_grad():
        base_out = backbone.predict(backbone.denoiser, problem)
        add_lora(backbone.denoiser, LoraConfig(rank=4, alpha=8), backbone.lora_target_modules)
        for name, param in backbone.denoiser.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.2)
        tuned_out = backbone.predict(backbone.denoiser, problem)
    backbone.save_lora(backbone.denoiser, tmp_path / "lora")
    pipe = pipeline_class.from_pretrained(str(backbone.path))
    pipe.load_lora_weights(str(tmp_path / "lora"))
    with torch.no_grad():
        loaded_out = backbone.predict(getattr(pipe, backbone.denoiser_name), problem)
    assert not torch.allclose(loaded_out, base_out, atol=1e-4)
    assert torch.allclose(loaded_out, tuned_out, atol=1e-5)  # alpha / rank travels with the weights
