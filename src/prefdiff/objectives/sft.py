"""SFT on winners: the plain denoising loss on the preferred image only (the paper's baseline).

    loss = e_w  (mean over C,H,W of (pred - target)^2), averaged over pairs.

The losers are never run through the network, and no reference is needed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from prefdiff.objectives.base import OBJECTIVES, ObjectiveOutput


@OBJECTIVES.register("sft")
@dataclass
class SFTObjective:
    """SFT on the winners: the denoising loss on preferred images only (no reference, no losers)."""

    needs_reference: ClassVar[bool] = False
    needs_losers: ClassVar[bool] = False

    def checks(self) -> list[tuple[bool, str, str]]:
        return []

    def __call__(
        self,
        policy_err_w: torch.Tensor,
        policy_err_l: torch.Tensor | None = None,
        ref_err_w: torch.Tensor | None = None,
        ref_err_l: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
    ) -> ObjectiveOutput:
        loss_per_pair = policy_err_w
        metrics = {"loss": loss_per_pair.mean().detach(), "policy_err_w": policy_err_w.mean().detach()}
        return ObjectiveOutput(loss_per_pair, metrics)
