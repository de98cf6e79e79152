"""Diffusion-DPO (Wallace et al., 2023, eq. 14 with the 1/2 of the official implementation).

For a pair sharing one noise draw and timestep, with per-sample errors ``e = ||pred - target||^2``
(mean over C,H,W):

    inside = -0.5 * beta * ((e_w - e_ref_w) - (e_l - e_ref_l))
    loss   = -log sigmoid(inside)

At initialisation the policy equals the reference, ``inside = 0`` and the loss is ``ln 2``.
``inside`` is the implicit reward margin ``r_w - r_l`` with ``r = -0.5 * beta * (e - e_ref)``;
the pair is "implicitly correct" when ``inside > 0`` (an exact tie counts 0.5), and the share of
pairs with ``inside < 0`` is logged as ``negative_margin_share``.

Flow-DPO (the flow families, SD3 and FLUX.1) is this objective unchanged, with ``e`` the error of
the predicted velocity against ``noise - x_0``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import ClassVar

import torch
import torch.nn.functional as F

from prefdiff.objectives.base import OBJECTIVES, ObjectiveOutput, hard_labels_only


@OBJECTIVES.register("dpo")
@dataclass
class DPOObjective:
    """Diffusion-DPO: denoise winners better and losers worse than the reference does."""

    beta: float = field(
        default=5000.0,
        metadata={"help": "DPO beta (KL strength) under the 0.5*beta convention; the paper uses 2000-5000."},
    )
    needs_reference: ClassVar[bool] = True
    needs_losers: ClassVar[bool] = True
    loss_at_reference: ClassVar[float] = math.log(2)  # inside = 0 while the policy is the reference

    def checks(self) -> list[tuple[bool, str, str]]:
        return [(self.beta > 0, "beta", "must be > 0")]

    def __call__(
        self,
        policy_err_w: torch.Tensor,
        policy_err_l: torch.Tensor | None,
        ref_err_w: torch.Tensor | None,
        ref_err_l: torch.Tensor | None,
        labels: torch.Tensor | None = None,
    ) -> ObjectiveOutput:
        if policy_err_l is None or ref_err_w is None or ref_err_l is None:
            raise ValueError("DPO needs policy errors for losers and reference errors for both images")
        hard_labels_only(labels, "dpo")
        winner_term = policy_err_w - ref_err_w  # [P] < 0 when the policy denoises the winner better
        loser_term = policy_err_l - ref_err_l  # [P] > 0 when it denoises the loser worse
        inside = -0.5 * self.beta * (winner_term - loser_term)  # [P]
        loss_per_pair = -F.logsigmoid(inside)
        with torch.no_grad():
            accuracy = (inside > 0).float() + 0.5 * (inside == 0).float()
            metrics = {
                "loss": loss_per_pair.mean(),
                "implicit_acc": accuracy.mean(),
                "reward_margin": inside.mean(),
                # pairs the policy currently ranks the wrong way round; with a too-large beta on a flow
                # model this stays near 1/2 while the loss explodes (see docs/training.md)
                "negative_margin_share": (inside < 0).float().mean(),
                "winner_term": winner_term.mean(),
                "loser_term": loser_term.mean(),
                "policy_err_w": policy_err_w.mean(),
                "policy_err_l": policy_err_l.mean(),
                "ref_err_w": ref_err_w.mean(),
                "ref_err_l": ref_err_l.mean(),
            }
        return ObjectiveOutput(loss_per_pair, {k: v.detach() for k, v in metrics.items()}, inside.detach())
