"""Objectives: pure functions of per-sample denoising errors. Adding one is adding a file."""

from __future__ import annotations

from prefdiff.config import ObjectiveConfig
from prefdiff.objectives.base import Objective, ObjectiveOutput
from prefdiff.objectives.dpo import DPOObjective
from prefdiff.objectives.sft import SFTObjective


def build_objective(config: ObjectiveConfig) -> Objective:
    """The objective named by ``config.name``."""
    if config.name == "dpo":
        return DPOObjective(beta=config.beta)
    if config.name == "sft":
        return SFTObjective()
    raise ValueError(f"unknown objective {config.name!r}")  # config validation prevents this


__all__ = ["DPOObjective", "Objective", "ObjectiveOutput", "SFTObjective", "build_objective"]
