"""One micro-batch: the backbone's denoising problem, reference and policy errors, the loss."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import cast

import torch

from prefdiff.data.batch import PairBatch
from prefdiff.models.base import Backbone, Denoiser
from prefdiff.objectives.base import Objective, ObjectiveOutput, UnpairedObjective, is_unpaired
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


def step_reference_point(
    ctx: StepContext,
    denoiser: Denoiser,
    batches: Sequence[PairBatch],
    reduce_sum: Callable[[torch.Tensor], torch.Tensor] = lambda t: t,
) -> torch.Tensor:
    """KTO's reference point for one optimizer step (:mod:`prefdiff.objectives.kto`): the
    policy's and the reference's errors on every micro-batch's images under their mismatched
    prompts (no grad), summed over micro-batches and, through ``reduce_sum``, processes."""
    objective = cast(UnpairedObjective, ctx.objective)
    if ctx.reference is None:
        raise ValueError(f"objective {type(objective).__name__} needs a reference model and none was built")
    totals = torch.zeros(2, dtype=torch.float64, device=ctx.device)
    with torch.no_grad():
        for batch in batches:
            problem = ctx.backbone.denoising_problem(batch.mismatched(), ctx.seed, ctx.resolution, ctx.device, False)
            policy = ctx.backbone.errors(denoiser, problem)
            total, count = objective.reference_point(policy, ctx.reference.errors(ctx.backbone, problem))
            totals += torch.stack(
                [total.to(totals), torch.tensor(float(count), dtype=torch.float64, device=ctx.device)]
            )
    summed = reduce_sum(totals)
    return objective.reference_point_value(summed[0], summed[1])


def _check_pairing(objective: Objective, batch: PairBatch) -> None:
    if is_unpaired(objective) and not batch.unpaired:
        raise ValueError(f"objective {type(objective).__name__} trains on single labelled images, got pairs")
    if batch.unpaired and not is_unpaired(objective):
        raise ValueError(f"objective {type(objective).__name__} trains on pairs, got single labelled images")


def micro_batch_loss(
    ctx: StepContext, denoiser: Denoiser, batch: PairBatch, reference_point: torch.Tensor | None = None
) -> ObjectiveOutput:
    """Loss and metrics for one micro-batch of ``P`` pairs (or ``P`` single images for an
    unpaired objective, with the step's ``reference_point``).

    The policy (and reference) see the stacked batch ``[winners; losers]`` of ``2P`` images with
    noise and timestep repeated, so both images of a pair share one draw. Objectives that ignore
    losers (SFT) run the ``P`` winners only. With ``objective.winner_guard`` the loser errors'
    gradient is scaled per pair (:mod:`prefdiff.objectives.guard`), logged as ``guard_scale``.
    """
    objective = ctx.objective
    _check_pairing(objective, batch)
    problem = ctx.backbone.denoising_problem(batch, ctx.seed, ctx.resolution, ctx.device, objective.needs_losers)
    ref_w = ref_l = None
    if objective.needs_reference:
        if ctx.reference is None:
            raise ValueError(f"objective {type(objective).__name__} needs a reference model and none was built")
        ref_w, ref_l = problem.split(ctx.reference.errors(ctx.backbone, problem))
    mu = getattr(objective, "winner_guard_mu", 0.0) if getattr(objective, "winner_guard", False) else None
    if mu is None or not problem.has_losers:
        policy_w, policy_l = problem.split(ctx.backbone.errors(denoiser, problem))
        if is_unpaired(objective):
            unpaired = cast(UnpairedObjective, objective)
            return unpaired(policy_w, policy_l, ref_w, ref_l, batch.labels, reference_point=reference_point)
        return objective(policy_w, policy_l, ref_w, ref_l, batch.labels)
    prediction = ctx.backbone.predict(denoiser, problem)
    policy_w, policy_l = problem.split(ctx.backbone.errors_of(prediction, problem))
    residual_w, residual_l = (prediction - problem.target).float().chunk(2)
    scale = guard_scale(residual_w, residual_l, mu)
    assert policy_l is not None
    out = objective(policy_w, scale_gradient(policy_l, scale), ref_w, ref_l, batch.labels)
    out.metrics["guard_scale"] = scale.mean()
    return out
