"""One micro-batch: latents, a shared noise draw per pair, reference and policy errors, loss."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from prefdiff.models.base import Backbone
from prefdiff.objectives.base import Objective, ObjectiveOutput
from prefdiff.train.reference import Reference


@dataclass
class StepContext:
    backbone: Backbone
    objective: Objective
    reference: Reference | None
    seed: int
    resolution: int
    device: torch.device


def _latents(ctx: StepContext, batch: dict[str, Any], eps: torch.Tensor, which: str) -> torch.Tensor:
    """Scaled latents ``[P,C,h,w]`` for ``which`` in {winner, loser}: from cached distributions
    when the batch carries them, else by running the VAE on the pixels."""
    if f"{which}_latent_mean" in batch:
        mean, std = batch[f"{which}_latent_mean"], batch[f"{which}_latent_std"]
    else:
        mean, std = ctx.backbone.latent_distribution(batch[f"{which}_pixels"].to(ctx.device))
    return ctx.backbone.latents_from_distribution(mean.to(ctx.device), std.to(ctx.device), eps.to(ctx.device))


def _prompt_conditioning(ctx: StepContext, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
    if "prompt_cond" in batch:  # cached text conditioning
        return {k: v.to(ctx.device) for k, v in batch["prompt_cond"].items()}
    return ctx.backbone.encode_prompts(batch["prompts"])


def micro_batch_loss(ctx: StepContext, unet: torch.nn.Module, batch: dict[str, Any]) -> ObjectiveOutput:
    """Loss and metrics for one micro-batch of ``P`` pairs.

    The policy (and reference) see the stacked batch ``[winners; losers]`` of ``2P`` images with
    noise and timestep repeated, so both images of a pair share one draw. Objectives that ignore
    losers (SFT) run the ``P`` winners only.
    """
    backbone = ctx.backbone
    num_pairs = len(batch["slots"])
    some_latents = batch.get("winner_latent_mean", batch.get("winner_pixels"))
    latent_shape = (
        tuple(some_latents.shape[1:]) if "winner_latent_mean" in batch else backbone.latent_shape(ctx.resolution)
    )
    draw = backbone.draw_noise(batch["slots"], ctx.seed, latent_shape)  # one draw per pair
    with torch.no_grad():
        prompt_cond = _prompt_conditioning(ctx, batch)
        winner_latents = _latents(ctx, batch, draw.latent_eps_w, "winner")
        if ctx.objective.needs_losers:
            loser_latents = _latents(ctx, batch, draw.latent_eps_l, "loser")
            latents = torch.cat([winner_latents, loser_latents])
            repeat = 2
        else:
            latents = winner_latents
            repeat = 1
    noise = draw.noise.to(ctx.device).repeat(repeat, 1, 1, 1)
    timesteps = draw.timesteps.to(ctx.device).repeat(repeat)
    noisy, target = backbone.noisy_input_and_target(latents, noise, timesteps)
    micro = {k: batch[k][: num_pairs * repeat] for k in ("original_size", "crop_top_left")}
    cond = backbone.image_conditioning(prompt_cond, micro, ctx.resolution)

    ref_w = ref_l = None
    if ctx.objective.needs_reference:
        assert ctx.reference is not None, "objective needs a reference model"
        ref_err = ctx.reference.errors(backbone, noisy, timesteps, cond, target)
        ref_w, ref_l = ref_err[:num_pairs], ref_err[num_pairs:] if repeat == 2 else None
    policy_err = backbone.denoising_errors(unet, noisy, timesteps, cond, target)
    policy_w = policy_err[:num_pairs]
    policy_l = policy_err[num_pairs:] if repeat == 2 else None
    return ctx.objective(policy_w, policy_l, ref_w, ref_l)
