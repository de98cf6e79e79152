"""Diffusion-KTO (Li et al., 2024, "Aligning Diffusion Models by Optimizing Human Utility"):
Kahneman-Tversky optimisation on per-image labels, desirable or undesirable, no pairs needed.

Each image has the implicit reward of :mod:`prefdiff.objectives.margin`, on the same beta scale
as DPO's: ``r = -0.5 * beta * (e - e_ref)``. Its utility is measured against a reference point
``z``, KTO's estimate of the policy's KL divergence from the reference, taken (as in the paper,
and in KTO for language models) on *mismatched* prompt-image pairs: the same images under other
samples' prompts (:mod:`prefdiff.data.unpaired`), where neither model should do better:

    z = max(0, mean over the optimizer step's images of -0.5 * beta * (e'_pol - e'_ref))   (no grad)
    u = s * (r - z)                 s = +1 for a desirable image, -1 for an undesirable one
    loss = w * (1 - sigmoid(u))     w = objective.desirable_weight or objective.undesirable_weight
    grad_factor = d loss / d e = 0.5 * beta * s * w * sigmoid(u) * (1 - sigmoid(u))

``e'`` are the errors on mismatched prompts. The training loop computes ``z`` once per
optimizer step over every micro-batch and process (one no-grad policy and reference forward of
the step's images) and passes it in, so gradient accumulation and the process count do not
change it; the unfloored estimate is logged as ``kl_estimate``. (The authors' released script
takes the mean reward of the matched images of each batch instead; this follows the paper.) The
loss is averaged over images: ``train.batch_size`` counts images for this objective.

At initialisation the policy is the reference: ``r = 0``, ``z = 0`` and the loss is ``w / 2``
(0.5 with the default weights). The authors' code uses ``beta = 1000`` on ``e_ref - e`` without
the 0.5, which is ``beta = 2000`` here, the default. ``u > 0`` is an image on the right side of
the reference point: ``implicit_acc`` is that share, ``reward_margin`` the mean of ``u``.
Hard labels only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch

from prefdiff.objectives.base import OBJECTIVES, ObjectiveOutput
from prefdiff.objectives.margin import ranking_metrics


def implicit_reward(beta: float, policy_err: torch.Tensor, ref_err: torch.Tensor) -> torch.Tensor:
    """``r = -0.5 * beta * (e - e_ref)`` per image ``[N]``."""
    return -0.5 * beta * (policy_err - ref_err)


def _subset_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``values`` where ``mask``; 0 when the mask is empty (a batch of one kind)."""
    return (values * mask).sum() / mask.sum().clamp_min(1)


@OBJECTIVES.register("kto")
@dataclass
class KTOObjective:
    """Diffusion-KTO: per-image desirable/undesirable labels around a KL reference point (Li et al. 2024)."""

    beta: float = field(
        default=2000.0,
        metadata={
            "help": "Beta on DPO's scale (r = -0.5*beta*(e - e_ref)); default 2000, the authors' 1000 without the 0.5."
        },
    )
    desirable_weight: float = field(default=1.0, metadata={"help": "lambda_D, the weight of a desirable image's loss."})
    undesirable_weight: float = field(
        default=1.0, metadata={"help": "lambda_U, the weight of an undesirable image's loss."}
    )
    needs_reference: ClassVar[bool] = True
    needs_losers: ClassVar[bool] = False
    needs_unpaired: ClassVar[bool] = True
    needs_reference_point: ClassVar[bool] = True
    soft_labels: ClassVar[bool] = False
    loss_at_reference: ClassVar[float] = 0.5  # r = z = 0: w (1 - sigmoid(0)) with w = 1

    def checks(self) -> list[tuple[bool, str, str]]:
        return [
            (isinstance(self.beta, int | float) and self.beta > 0, "beta", "must be > 0"),
            (self.desirable_weight > 0, "desirable_weight", "must be > 0"),
            (self.undesirable_weight > 0, "undesirable_weight", "must be > 0"),
        ]

    def reference_point(self, policy_err: torch.Tensor, ref_err: torch.Tensor) -> tuple[torch.Tensor, int]:
        """``(sum of r, count)`` over mismatched images, to be summed over micro-batches and
        processes; :meth:`reference_point_value` turns the sums into ``z``."""
        with torch.no_grad():
            return implicit_reward(self.beta, policy_err, ref_err).double().sum(), policy_err.numel()

    @staticmethod
    def reference_point_value(total: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
        """The KL estimate ``total / count`` (mean ``r`` on mismatched prompts), a 0-dim float32
        tensor (0 for no images); the loss floors it at 0 to make ``z``."""
        return (total / count.clamp_min(1)).float()

    def __call__(
        self,
        policy_err_w: torch.Tensor,
        policy_err_l: torch.Tensor | None,
        ref_err_w: torch.Tensor | None,
        ref_err_l: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        reference_point: torch.Tensor | None = None,
    ) -> ObjectiveOutput:
        """``policy_err_w``/``ref_err_w [P]``: the errors of ``P`` single images; ``labels [P]``:
        1.0 desirable, 0.0 undesirable; ``reference_point``: the step's KL estimate, floored at 0
        to make ``z`` (0 when not given)."""
        if policy_err_l is not None:
            raise ValueError("objective 'kto' trains on single images: it takes no loser errors")
        if ref_err_w is None:
            raise ValueError("objective 'kto' needs reference errors")
        if labels is None or not bool(torch.all((labels == 0) | (labels == 1))):
            raise ValueError("objective 'kto' needs per-image labels: 1.0 desirable, 0.0 undesirable")
        desirable = (labels.to(policy_err_w) == 1).to(policy_err_w)
        kl = torch.zeros((), dtype=policy_err_w.dtype) if reference_point is None else reference_point.detach()
        kl = kl.to(policy_err_w)
        z = kl.clamp_min(0.0)
        reward = implicit_reward(self.beta, policy_err_w, ref_err_w)
        sign = 2.0 * desirable - 1.0
        u = sign * (reward - z)
        weight = self.desirable_weight * desirable + self.undesirable_weight * (1.0 - desirable)
        h = torch.sigmoid(u)
        loss_per_image = weight * (1.0 - h)
        with torch.no_grad():
            grad_factor = 0.5 * self.beta * sign * weight * h * (1.0 - h)
            undesirable = 1.0 - desirable
            metrics = {
                "loss": loss_per_image.mean(),
                **ranking_metrics(u),
                "grad_factor": grad_factor.mean(),
                "reference_point": z,
                "kl_estimate": kl,
                "reward_desirable": _subset_mean(reward, desirable),
                "reward_undesirable": _subset_mean(reward, undesirable),
                "desirable_share": desirable.mean(),
                "policy_err": policy_err_w.mean(),
                "ref_err": ref_err_w.mean(),
            }
        return ObjectiveOutput(loss_per_image, {k: v.detach() for k, v in metrics.items()})
