"""One micro-batch: the backbone's denoising problem, reference and policy errors, the loss."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from prefdiff.data.batch import PairBatch
from prefdiff.models.base import Backbone, Denoiser
from prefdiff.objectives.base import Objective, ObjectiveOutput
from prefdiff.objectives.guard import guard_scale, scale_gradient
from prefdiff.train.reference import Reference


@dataclass
class StepContext:
    backbone: Backbone
    objective: Objective
    reference: Reference | None
    seed: int
    resolution: int
    device: torch.device


def micro_batch_loss(ctx: StepContext, denoiser: Denoiser, batch: PairBatch) -> ObjectiveOutput:
    """Loss and metrics for one micro-batch of ``P`` pairs.

    The policy (and reference) see the stacked batch ``[winners; losers]`` of ``2P`` images with
    noise and timestep repeated, so both images of a pair share one draw. Objectives that ignore
    losers (SFT) run the ``P`` winners only. With ``objective.winner_guard`` the loser errors'
    gradient is scaled per pair (:mod:`prefdiff.objectives.guard`), logged as ``guard_scale``.
    """
    objective = ctx.objective
    problem = ctx.backbone.denoising_problem(batch, ctx.seed, ctx.resolution, ctx.device, objective.needs_losers)
    ref_w = ref_l = None
    if objective.needs_reference:
        if ctx.reference is None:
            raise ValueError(f"objective {type(objective).__name__} needs a reference model and none was built")
        ref_w, ref_l = problem.split(ctx.reference.errors(ctx.backbone, problem))
    mu = getattr(objective, "winner_guard_mu", 0.0) if getattr(objective, "winner_guard", False) else None
    if mu is None or not problem.has_losers:
        policy_w, policy_l = problem.split(ctx.backbone.errors(denoiser, problem))
        return objective(policy_w, policy_l, ref_w, ref_l, batch.labels)
    prediction = ctx.backbone.predict(denoiser, problem)
    policy_w, policy_l = problem.split(ctx.backbone.errors_of(prediction, problem))
    residual_w, residual_l = (prediction - problem.target).float().chunk(2)
    scale = guard_scale(residual_w, residual_l, mu)
    assert policy_l is not None
    out = objective(policy_w, scale_gradient(policy_l, scale), ref_w, ref_l, batch.labels)
    out.metrics["guard_scale"] = scale.mean()
    return out
