"""SFT on winners: the plain denoising loss on the preferred image only (the paper's baseline).

    loss = e_w  (mean over C,H,W of (pred - target)^2), averaged over pairs.

The losers are never run through the network, and no reference is needed.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from prefdiff.objectives.base import ObjectiveOutput


@dataclass
class SFTObjective:
    needs_reference: bool = False
    needs_losers: bool = False

    def __call__(
        self,
        policy_err_w: torch.Tensor,
        policy_err_l: torch.Tensor | None = None,
        ref_err_w: torch.Tensor | None = None,
        ref_err_l: torch.Tensor | None = None,
    ) -> ObjectiveOutput:
        loss_per_pair = policy_err_w
        metrics = {"loss": loss_per_pair.mean().detach(), "policy_err_w": policy_err_w.mean().detach()}
        return ObjectiveOutput(loss_per_pair, metrics)
