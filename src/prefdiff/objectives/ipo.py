"""IPO (Azar et al., 2023, "A General Theoretical Paradigm to Understand Learning from Human
Preferences"), on Diffusion-DPO's margin, with soft labels and label smoothing.

Azar et al.'s sample loss is ``(h - 1/(2 tau))^2`` with ``h`` the log-likelihood-ratio margin
and ``tau`` the regularisation. In diffusion code ``h`` is replaced, as in Diffusion-DPO, by the
denoising-error margin, ``h = -0.5 * ((e_w - e_ref_w) - (e_l - e_ref_l))``; with ``beta = tau``
prefdiff's margin is ``x = beta * h`` (:mod:`prefdiff.objectives.margin`), and

    beta^2 * (h - 1/(2 beta))^2 = (x - 1/2)^2

which is the loss used here: the same minimiser, scaled by the constant ``beta^2`` (Adam's
updates do not depend on it). IPO regresses the margin onto a target instead of pushing it
without end, so a larger beta means a smaller target for ``h``: a stronger pull to the
reference. With a soft label ``q`` the loss is the expectation over the label,

    loss = q (x - 1/2)^2 + (1 - q) (x + 1/2)^2 = (x - (q - 1/2))^2 + q (1 - q)
    grad_factor = d loss / d e_w = beta * (q - 1/2 - x)         (beta / 2 at the start, q = 1)

so the target margin is ``q - 1/2``: 1/2 for a hard label, 0 for a tie. At initialisation
(``x = 0``, ``q = 1``) the loss is 1/4.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Literal

import torch

from prefdiff.objectives.base import OBJECTIVES, ObjectiveOutput
from prefdiff.objectives.margin import (
    LABEL_SMOOTHING_HELP,
    BetaFields,
    GuardFields,
    beta_help,
    implicit_margin,
    margin_output,
    smoothing_check,
    target_labels,
)


@OBJECTIVES.register("ipo")
@dataclass
class IPOObjective(BetaFields, GuardFields):
    """IPO: regress the implicit reward margin onto a fixed target (Azar et al. 2023)."""

    beta: float | Literal["auto"] = field(default=5000.0, metadata={"help": beta_help(5000.0, "IPO's tau")})
    label_smoothing: float = field(default=0.0, metadata={"help": LABEL_SMOOTHING_HELP})
    needs_reference: ClassVar[bool] = True
    needs_losers: ClassVar[bool] = True
    soft_labels: ClassVar[bool] = True
    loss_at_reference: ClassVar[float] = 0.25  # (0 - 1/2)^2
    start_factor: ClassVar[float] = 0.5

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
        margin = implicit_margin(self.beta, policy_err_w, policy_err_l, ref_err_w, ref_err_l, "ipo")  # type: ignore[arg-type]
        x = margin.x
        q = target_labels(labels, x.shape[0], self.label_smoothing, x)
        loss_per_pair = (x - (q - 0.5)).pow(2) + q * (1.0 - q)
        with torch.no_grad():
            grad_factor = float(self.beta) * (q - 0.5 - x)
        return margin_output(margin, loss_per_pair, grad_factor)
