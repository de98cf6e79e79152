"""What the margin objectives share: the implicit reward margin, preference labels, the
fields for beta and the winner guard, and the metrics every paired objective logs.

For a pair sharing one noise draw and timestep, with per-sample errors ``e`` (mean over C,H,W of
``(pred - target)^2``) of the policy and ``e_ref`` of the reference:

    winner_term = e_w - e_ref_w        (< 0: the policy denoises the winner better)
    loser_term  = e_l - e_ref_l        (> 0: it denoises the loser worse)
    x = -0.5 * beta * (winner_term - loser_term)

``x`` is Diffusion-DPO's ``inside``, the implicit reward margin ``r_w - r_l`` with
``r = -0.5 * beta * (e - e_ref)``. Every margin objective is a function of ``x`` and the pair's
label, so they share one scale for beta.

Labels: ``p [P]`` is the probability that the first image (the winner) is preferred: 1.0 for a
hard label, a vote fraction (4 of 5 votes: 0.8) or 0.5 for a kept tie with ``data.soft_labels``.
Label smoothing ``eps`` (conservative DPO, Mitchell 2023) mixes in the flipped label:
``q = p (1 - eps) + (1 - p) eps``; with ``p = 1`` and ``eps = 0``, ``q = 1`` exactly.

The gradient factor: ``grad_factor = d loss / d e_w`` per pair, the weight the loss puts on the
winner's denoising gradient (SFT's is 1). At the start (policy = reference, ``x = 0``) it is
``start_factor * beta`` with ``start_factor`` a constant of each objective (DPO 1/4, IPO and
hinge 1/2), which ``objective.beta=auto`` uses.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch

from prefdiff.objectives.base import ObjectiveOutput

AUTO = "auto"


@dataclass
class Margin:
    """``x``, ``winner_term`` and ``loser_term``, each ``[P]``, and the four errors they came from
    (``policy_err_w``, ...), for the metrics."""

    x: torch.Tensor
    winner_term: torch.Tensor
    loser_term: torch.Tensor
    errors: dict[str, torch.Tensor]


def implicit_margin(
    beta: float,
    policy_err_w: torch.Tensor,
    policy_err_l: torch.Tensor | None,
    ref_err_w: torch.Tensor | None,
    ref_err_l: torch.Tensor | None,
    name: str,
) -> Margin:
    """The implicit reward margin of the module docstring; refuses missing inputs naming ``name``."""
    if policy_err_l is None or ref_err_w is None or ref_err_l is None:
        raise ValueError(f"objective {name!r} needs policy errors for losers and reference errors for both images")
    if not isinstance(beta, float | int):
        raise ValueError(f"objective {name!r}: beta is {beta!r}; beta=auto is resolved by the training loop")
    winner_term = policy_err_w - ref_err_w
    loser_term = policy_err_l - ref_err_l
    errors = {"policy_err_w": policy_err_w, "policy_err_l": policy_err_l}
    errors |= {"ref_err_w": ref_err_w, "ref_err_l": ref_err_l}
    return Margin(-0.5 * beta * (winner_term - loser_term), winner_term, loser_term, errors)


def target_labels(labels: torch.Tensor | None, size: int, label_smoothing: float, like: torch.Tensor) -> torch.Tensor:
    """``q [P]``: the labels (ones when None) with label smoothing mixed in."""
    p = torch.ones(size, dtype=like.dtype, device=like.device) if labels is None else labels.to(like)
    if label_smoothing == 0.0:
        return p
    return p * (1.0 - label_smoothing) + (1.0 - p) * label_smoothing


def margin_output(margin: Margin, loss_per_pair: torch.Tensor, grad_factor: torch.Tensor) -> ObjectiveOutput:
    """The objective's output: the loss, :func:`margin_metrics` and the margin for evaluation."""
    return ObjectiveOutput(loss_per_pair, margin_metrics(margin, loss_per_pair, grad_factor), margin.x.detach())


def margin_metrics(margin: Margin, loss_per_pair: torch.Tensor, grad_factor: torch.Tensor) -> dict[str, torch.Tensor]:
    """The metrics every margin objective logs, detached: loss, implicit accuracy (``x > 0``, an
    exact tie 0.5), reward margin, the share of pairs with a negative margin (ranked the wrong
    way round), the mean gradient factor, the winner and loser terms and the four errors."""
    metrics = {
        "loss": loss_per_pair.mean(),
        **ranking_metrics(margin.x),
        "grad_factor": grad_factor.mean(),
        "winner_term": margin.winner_term.mean(),
        "loser_term": margin.loser_term.mean(),
    }
    metrics.update({name: value.mean() for name, value in margin.errors.items()})
    return {k: v.detach() for k, v in metrics.items()}


def ranking_metrics(margin: torch.Tensor) -> dict[str, torch.Tensor]:
    """How a margin ``[P]`` ranks the pairs: implicit accuracy (``> 0``, an exact tie 0.5), its
    mean, and the share of pairs ranked the wrong way round (``< 0``)."""
    m = margin.detach()
    return {
        "implicit_acc": ((m > 0).float() + 0.5 * (m == 0).float()).mean(),
        "reward_margin": m.mean(),
        "negative_margin_share": (m < 0).float().mean(),
    }


def beta_help(default: float, scale: str) -> str:
    return (
        f"Beta (KL strength) under the 0.5*beta convention of Diffusion-DPO's margin ({scale}; default {default:g}), "
        "or 'auto': chosen from the first pairs' reference errors (objective.auto_beta_target)."
    )


@dataclass
class BetaFields:
    """``beta`` (a number or ``auto``) and the target ``beta=auto`` aims at."""

    beta: float | Literal["auto"] = field(
        default=5000.0, metadata={"help": beta_help(5000.0, "2000-5000 in the paper")}
    )
    auto_beta_target: float = field(
        default=8.0,
        metadata={
            "help": "With beta=auto: the starting gradient factor on log errors, d loss / d log e_w = "
            "start_factor * beta * mean reference error, that beta is solved for (docs/objectives.md)."
        },
    )

    def beta_checks(self) -> list[tuple[bool, str, str]]:
        auto = self.beta == AUTO
        return [
            (auto or (isinstance(self.beta, int | float) and self.beta > 0), "beta", "must be > 0 or 'auto'"),
            (self.auto_beta_target > 0, "auto_beta_target", "must be > 0"),
        ]


@dataclass
class GuardFields:
    """The winner guard (Diffusion-SDPO, Fu et al. 2025), for any paired objective."""

    winner_guard: bool = field(
        default=False,
        metadata={
            "help": "Scale each pair's loser gradient so that, to first order, the winner's error does not rise "
            "(Diffusion-SDPO's safeguard, per pair)."
        },
    )
    winner_guard_mu: float = field(
        default=0.9,
        metadata={
            "help": "The guard's margin mu in [0, 1]: the winner's error must fall by at least mu of what the "
            "winner's own gradient alone would take off (0.9 in the authors' scripts)."
        },
    )

    def guard_checks(self) -> list[tuple[bool, str, str]]:
        return [(0.0 <= self.winner_guard_mu <= 1.0, "winner_guard_mu", "must be in [0, 1]")]


def smoothing_check(label_smoothing: float) -> tuple[bool, str, str]:
    return (0.0 <= label_smoothing < 0.5, "label_smoothing", "must be in [0, 0.5)")


LABEL_SMOOTHING_HELP = (
    "Label smoothing eps in [0, 0.5) (conservative / robust DPO): each pair's label q = p(1-eps) + (1-p)eps, "
    "for labels that are wrong with probability eps."
)
