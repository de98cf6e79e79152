"""A hinge on the implicit reward margin (SLiC, Zhao et al. 2023, "SLiC-HF: Sequence Likelihood
Calibration with Human Feedback"), on Diffusion-DPO's margin ``x`` of
:mod:`prefdiff.objectives.margin`:

    loss = max(0, 1 - x)
    grad_factor = d loss / d e_w = 0.5 * beta * [x < 1]          (beta / 2 at the start)

A pair stops contributing once its margin reaches 1, where DPO's logistic loss keeps a small
pull (``sigmoid(-1) = 0.27`` of its start). At initialisation ``x = 0`` and the loss is 1. Hard
labels only: a hinge has no soft-label form.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Literal

import torch

from prefdiff.objectives.base import OBJECTIVES, ObjectiveOutput, hard_labels_only
from prefdiff.objectives.margin import BetaFields, GuardFields, beta_help, implicit_margin, margin_output


@OBJECTIVES.register("hinge")
@dataclass
class HingeObjective(BetaFields, GuardFields):
    """Hinge (SLiC): a margin of 1 on the implicit reward, then no push."""

    beta: float | Literal["auto"] = field(default=5000.0, metadata={"help": beta_help(5000.0, "as DPO's")})
    needs_reference: ClassVar[bool] = True
    needs_losers: ClassVar[bool] = True
    soft_labels: ClassVar[bool] = False
    loss_at_reference: ClassVar[float] = 1.0
    start_factor: ClassVar[float] = 0.5

    def checks(self) -> list[tuple[bool, str, str]]:
        return [*self.beta_checks(), *self.guard_checks()]

    def __call__(
        self,
        policy_err_w: torch.Tensor,
        policy_err_l: torch.Tensor | None,
        ref_err_w: torch.Tensor | None,
        ref_err_l: torch.Tensor | None,
        labels: torch.Tensor | None = None,
    ) -> ObjectiveOutput:
        hard_labels_only(labels, "hinge")
        margin = implicit_margin(self.beta, policy_err_w, policy_err_l, ref_err_w, ref_err_l, "hinge")  # type: ignore[arg-type]
        loss_per_pair = torch.relu(1.0 - margin.x)
        with torch.no_grad():
            grad_factor = 0.5 * float(self.beta) * (margin.x < 1).to(margin.x)
        return margin_output(margin, loss_per_pair, grad_factor)
