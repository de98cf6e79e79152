"""Objectives: pure functions of per-sample denoising errors. Adding one is adding a file that
registers itself in :data:`OBJECTIVES` (see docs/training.md, "How to add an objective")."""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING

from prefdiff.objectives.base import OBJECTIVES, Objective, ObjectiveOutput
from prefdiff.objectives.dpo import DPOObjective
from prefdiff.objectives.sft import SFTObjective

if TYPE_CHECKING:
    from prefdiff.config import ObjectiveConfig


def build_objective(config: ObjectiveConfig) -> Objective:
    """The objective named by ``config.name``, with its own fields from ``config``."""
    OBJECTIVES.get(config.name, key="objective.name")
    return copy.deepcopy(config.options)


__all__ = ["OBJECTIVES", "DPOObjective", "Objective", "ObjectiveOutput", "SFTObjective", "build_objective"]
