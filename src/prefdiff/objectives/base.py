"""The objective seam: per-sample denoising errors in, a loss per pair and metrics out.

An objective is a dataclass whose fields are its own config keys (``objective.<field>``, each
with help text) and whose call is pure tensor code. It declares what the loop must compute for
it (``needs_reference``, ``needs_losers``, ``needs_unpaired``) and registers itself by name in :data:`OBJECTIVES`;
the loop, the config and the quickstart find it there.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

import torch

from prefdiff.registry import Registry


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
    ``loss_at_reference``: the loss while the policy equals the reference (objectives with a
    reference document it; the conformance test checks it).
    """

    needs_reference: ClassVar[bool]
    needs_losers: ClassVar[bool]

    def __call__(
        self,
        policy_err_w: torch.Tensor,
        policy_err_l: torch.Tensor | None,
        ref_err_w: torch.Tensor | None,
        ref_err_l: torch.Tensor | None,
        labels: torch.Tensor | None = None,
    ) -> ObjectiveOutput:
        """Each error is ``[P]``: the mean over C,H,W of (prediction - target)^2 for one image;
        ``labels [P]`` is the probability that the first image is preferred (1.0: hard)."""
        ...

    def checks(self) -> list[tuple[bool, str, str]]:
        """``(ok, field, rule)`` range checks of the objective's own fields."""
        ...


class UnpairedObjective(Objective, Protocol):
    """An objective on single labelled images (``needs_unpaired``; KTO): the loop passes unpaired
    batches (winner errors only, ``labels`` 1.0 desirable / 0.0 undesirable) and, with
    ``needs_reference_point``, the step's ``reference_point`` from :meth:`reference_point`."""

    needs_unpaired: ClassVar[bool]
    needs_reference_point: ClassVar[bool]

    def reference_point(self, policy_err: torch.Tensor, ref_err: torch.Tensor) -> tuple[torch.Tensor, int]:
        """``(sum, count)`` of one micro-batch's contribution to the reference point."""
        ...

    def reference_point_value(self, total: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
        """The reference point from the sums over the whole step."""
        ...

    def __call__(
        self,
        policy_err_w: torch.Tensor,
        policy_err_l: torch.Tensor | None,
        ref_err_w: torch.Tensor | None,
        ref_err_l: torch.Tensor | None,
        labels: torch.Tensor | None = None,
        reference_point: torch.Tensor | None = None,
    ) -> ObjectiveOutput: ...


def is_unpaired(objective: object) -> bool:
    """Whether ``objective`` (an instance or its class) trains on single labelled images rather
    than pairs."""
    return bool(getattr(objective, "needs_unpaired", False))


def needs_reference_point(objective: object) -> bool:
    """Whether the loop must compute ``objective``'s per-step reference point (KTO)."""
    return bool(getattr(objective, "needs_reference_point", False))


def hard_labels_only(labels: torch.Tensor | None, name: str) -> None:
    """Refuse soft labels for an objective that defines no soft-label loss."""
    if labels is not None and not bool(torch.all(labels == 1.0)):
        raise ValueError(f"objective {name!r} takes hard labels (1.0: the first image won) only")


def objective_help(cls: Any) -> str:
    """The first line of an objective's docstring."""
    return (cls.__doc__ or "").strip().splitlines()[0].rstrip(".") if cls.__doc__ else ""


OBJECTIVES: Registry[type[Any]] = Registry("objective", package="prefdiff.objectives")
