"""Diffusion-DPO (Wallace et al., 2023, eq. 14 with the 1/2 of the official implementation),
with soft labels and label smoothing.

With the margin ``x = -0.5 * beta * ((e_w - e_ref_w) - (e_l - e_ref_l))`` of
:mod:`prefdiff.objectives.margin` and the pair's label ``q`` (1 for a hard label):

    loss = -(q log sigmoid(x) + (1 - q) log sigmoid(-x))
         = -log sigmoid(x) + (1 - q) x                 (as computed: exact DPO when q = 1)
    d loss / d x = sigmoid(x) - q
    grad_factor  = d loss / d e_w = 0.5 * beta * (q - sigmoid(x))      (beta / 4 at the start, q = 1)

At initialisation the policy equals the reference, ``x = 0`` and the loss is ``ln 2`` for every
``q``. ``x`` is the implicit reward margin ``r_w - r_l``; the pair is "implicitly correct" when
``x > 0``. The loss is least at ``sigmoid(x) = q``: a hard label keeps pushing the margin up, a
vote fraction ``q = 0.8`` (4 of 5 votes) asks for ``x = ln 4``, a kept tie ``q = 0.5`` for
``x = 0``. Label smoothing ``eps`` is conservative DPO (cDPO, Mitchell 2023).

Flow-DPO (the flow families, SD3 and FLUX.1) is this objective unchanged, with ``e`` the error of
the predicted velocity against ``noise - x_0``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import ClassVar

import torch
import torch.nn.functional as F

from prefdiff.objectives.base import OBJECTIVES, ObjectiveOutput
from prefdiff.objectives.margin import (
    LABEL_SMOOTHING_HELP,
    BetaFields,
    GuardFields,
    implicit_margin,
    margin_output,
    smoothing_check,
    target_labels,
)


@OBJECTIVES.register("dpo")
@dataclass
class DPOObjective(BetaFields, GuardFields):
    """Diffusion-DPO: denoise winners better and losers worse than the reference does."""

    label_smoothing: float = field(default=0.0, metadata={"help": LABEL_SMOOTHING_HELP})
    needs_reference: ClassVar[bool] = True
    needs_losers: ClassVar[bool] = True
    soft_labels: ClassVar[bool] = True
    loss_at_reference: ClassVar[float] = math.log(2)  # x = 0 while the policy is the reference
    start_factor: ClassVar[float] = 0.25  # grad_factor / beta at x = 0, q = 1

    def checks(self) -> list[tuple[bool, str, str]]:
        return [*self.beta_checks(), *self.guard_checks(), smoothing_check(self.label_smoothing)]

    def __call__(
        self,
        policy_err_w: torch.Tensor,
        policy_err_l: torch.Tensor | None,
        ref_err_w: torch.Tensor | None,
        ref_err_l: torch.Tensor | None,
        labels: torch.Tensor | None = None,
    ) -> ObjectiveOutput:
        margin = implicit_margin(self.beta, policy_err_w, policy_err_l, ref_err_w, ref_err_l, "dpo")  # type: ignore[arg-type]
        x = margin.x
        q = target_labels(labels, x.shape[0], self.label_smoothing, x)
        loss_per_pair = -F.logsigmoid(x) + (1.0 - q) * x
        with torch.no_grad():
            grad_factor = 0.5 * float(self.beta) * (q - torch.sigmoid(x))
        return margin_output(margin, loss_per_pair, grad_factor)
