"""MaPO: margin-aware preference optimisation (Hong et al., 2024, "Margin-aware Preference
Optimization for Aligning Diffusion Models without Reference"). Reference-free: the loop runs no
reference forward and, for full fine-tuning, keeps no frozen copy.

MaPO reads a per-sample error ``e`` as a stand-in for a negative log-likelihood and turns it
into a likelihood-like score with ``g(e) = s e / (exp(s e) - 1)`` (``s``: ``objective.snr``;
``g`` falls from 1 at ``e = 0``), then combines a margin term with SFT on the winner:

    m    = T * (g(e_w) - g(e_l))           (> 0 when the winner is denoised better)
    loss = e_w - w * log sigmoid(m)
    grad_factor = d loss / d e_w = 1 - w * sigmoid(-m) * T * g'(e_w)
    g'(e) = s (exp(s e) - 1 - s e exp(s e)) / (exp(s e) - 1)^2          (< 0)

``T`` (``objective.timesteps``) is the number of training timesteps the authors multiply the
margin by, 1000 for SD and SDXL (and the flow families' 1000 sigmas). The defaults are those of
the authors' code: ``w = 0.1`` (their beta; ``objective.margin_weight`` here, since it is not
the KL strength that ``objective.beta`` is for the margin objectives), ``s = 0.5``. ``m`` is
the implicit margin this objective ranks pairs by (``implicit_acc``: ``m > 0``); it compares the
policy with itself, not with a reference, so it is not 0 at the start. Hard labels only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch
import torch.nn.functional as F

from prefdiff.objectives.base import OBJECTIVES, ObjectiveOutput, hard_labels_only
from prefdiff.objectives.margin import GuardFields, ranking_metrics


def likelihood_score(err: torch.Tensor, snr: float) -> torch.Tensor:
    """``g(e) = s e / expm1(s e)`` ``[P]``, with its limit 1 at ``e = 0``."""
    se = (snr * err).clamp_min(1e-12)
    return se / torch.expm1(se)


def likelihood_score_slope(err: torch.Tensor, snr: float) -> torch.Tensor:
    """``g'(e)`` ``[P]`` (closed form, see the module docstring)."""
    se = (snr * err.double()).clamp_min(1e-6)  # float64: the numerator cancels to ~ -se^2 / 2
    em1 = torch.expm1(se)
    return (snr * (em1 - se * (em1 + 1.0)) / em1.pow(2)).to(err.dtype)


@OBJECTIVES.register("mapo")
@dataclass
class MaPOObjective(GuardFields):
    """MaPO: SFT on winners plus a reference-free margin term (Hong et al. 2024)."""

    margin_weight: float = field(
        default=0.1, metadata={"help": "MaPO's beta: the weight of its margin term beside SFT on the winner."}
    )
    snr: float = field(default=0.5, metadata={"help": "s in g(e) = s e / (exp(s e) - 1), MaPO's constant SNR."})
    timesteps: float = field(default=1000.0, metadata={"help": "T, the factor on MaPO's margin (training timesteps)."})
    needs_reference: ClassVar[bool] = False
    needs_losers: ClassVar[bool] = True
    soft_labels: ClassVar[bool] = False

    def checks(self) -> list[tuple[bool, str, str]]:
        return [
            (self.margin_weight >= 0, "margin_weight", "must be >= 0"),
            (self.snr > 0, "snr", "must be > 0"),
            (self.timesteps > 0, "timesteps", "must be > 0"),
            *self.guard_checks(),
        ]

    def __call__(
        self,
        policy_err_w: torch.Tensor,
        policy_err_l: torch.Tensor | None,
        ref_err_w: torch.Tensor | None = None,
        ref_err_l: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
    ) -> ObjectiveOutput:
        if policy_err_l is None:
            raise ValueError("objective 'mapo' needs policy errors for the losers")
        hard_labels_only(labels, "mapo")
        m = self.timesteps * (likelihood_score(policy_err_w, self.snr) - likelihood_score(policy_err_l, self.snr))
        margin_term = -self.margin_weight * F.logsigmoid(m)
        loss_per_pair = policy_err_w + margin_term
        with torch.no_grad():
            slope = likelihood_score_slope(policy_err_w, self.snr)
            grad_factor = 1.0 - self.margin_weight * torch.sigmoid(-m) * self.timesteps * slope
            metrics = {
                "loss": loss_per_pair.mean(),
                **ranking_metrics(m),
                "grad_factor": grad_factor.mean(),
                "sft_term": policy_err_w.mean(),
                "margin_term": margin_term.mean(),
                "policy_err_w": policy_err_w.mean(),
                "policy_err_l": policy_err_l.mean(),
            }
        return ObjectiveOutput(loss_per_pair, {k: v.detach() for k, v in metrics.items()}, m.detach())
