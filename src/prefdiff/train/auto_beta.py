"""``objective.beta=auto``: beta chosen from the reference errors of the run's first pairs.

At the start the policy is the reference, the margin is 0 and a margin objective's gradient
factor (``d loss / d e_w``, :mod:`prefdiff.objectives.margin`) is ``start_factor * beta``. On log
errors that is ``start_factor * beta * e``: how hard the loss pushes each winner's error down,
relative to its size. ``auto`` solves for the beta that makes this, with ``e`` the mean reference
error over both images of the first :data:`CALIBRATION_PAIRS` pairs, equal to
``objective.auto_beta_target``:

    beta = auto_beta_target / (start_factor * mean(e_ref))

So families and datasets whose errors are larger get a proportionally smaller beta (a flow
model's velocity errors are several times an epsilon model's). The pairs are the run's own first
slots, with the noise and timesteps training draws for them, so every process and a resumed run
find the same beta; it is logged, written to ``auto_beta.json`` in the run directory and used
for the whole run.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch

from prefdiff.objectives.margin import AUTO
from prefdiff.train.step import StepContext

log = logging.getLogger("prefdiff.train")

CALIBRATION_PAIRS = 64


def wants_auto_beta(objective: Any) -> bool:
    return getattr(objective, "beta", None) == AUTO


def mean_reference_error(ctx: StepContext, stream: Any, collate: Any, batch_size: int, pairs: int) -> float:
    """Mean reference error over winners and losers of slots ``0 .. pairs-1`` (no grad)."""
    if ctx.reference is None:
        raise ValueError("beta=auto needs the objective's reference model")
    total, count = 0.0, 0
    for first in range(0, pairs, batch_size):
        batch = collate([stream[slot] for slot in range(first, min(first + batch_size, pairs))])
        problem = ctx.backbone.denoising_problem(batch, ctx.seed, ctx.resolution, ctx.device, True)
        with torch.no_grad():
            errors = ctx.reference.errors(ctx.backbone, problem)
        total += float(errors.double().sum())
        count += errors.numel()
    return total / count


def resolve_auto_beta(
    ctx: StepContext, config: Any, stream: Any, collate: Any, run_dir: Path, is_main: bool
) -> float | None:
    """Replace ``beta=auto`` by its value in the run's objective and config; None when not auto."""
    objective = ctx.objective
    if not wants_auto_beta(objective):
        return None
    pairs = min(CALIBRATION_PAIRS, len(stream))
    error = mean_reference_error(ctx, stream, collate, config.train.batch_size, pairs)
    start_factor = float(type(objective).start_factor)  # type: ignore[attr-defined]
    target = float(objective.auto_beta_target)  # type: ignore[attr-defined]
    beta = target / (start_factor * error)
    objective.beta = beta  # type: ignore[attr-defined]
    config.objective.options.beta = beta
    log.info("beta=auto: %.4g (mean reference error %.4g over %d pairs, target %g)", beta, error, pairs, target)
    if is_main:
        record = {"beta": beta, "mean_reference_error": error, "pairs": pairs, "target": target}
        (run_dir / "auto_beta.json").write_text(json.dumps(record, indent=2) + "\n")
    return beta
