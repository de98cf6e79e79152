"""The objective seam: per-sample denoising errors in, a loss per pair and metrics out."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import torch


@dataclass
class ObjectiveOutput:
    """``loss_per_pair`` is ``[P]``; ``metrics`` are scalar tensors (detached) for logging;
    ``reward_margin_per_pair`` is the detached implicit reward margin ``[P]`` of objectives that
    have one (DPO's ``inside``), for evaluation on held-out pairs."""

    loss_per_pair: torch.Tensor
    metrics: dict[str, torch.Tensor] = field(default_factory=dict)
    reward_margin_per_pair: torch.Tensor | None = None

    @property
    def loss(self) -> torch.Tensor:
        """Mean over pairs: the scalar to back-propagate."""
        return self.loss_per_pair.mean()


class Objective(Protocol):
    """A preference objective as a pure function of per-sample errors.

    ``needs_reference``: the loop must provide reference errors (one no-grad forward).
    ``needs_losers``: the loop must run the loser images through the policy at all.
    """

    needs_reference: bool
    needs_losers: bool

    def __call__(
        self,
        policy_err_w: torch.Tensor,
        policy_err_l: torch.Tensor | None,
        ref_err_w: torch.Tensor | None,
        ref_err_l: torch.Tensor | None,
    ) -> ObjectiveOutput:
        """Each error is ``[P]``: the mean over C,H,W of (prediction - target)^2 for one image."""
        ...
