"""Held-out implicit accuracy during training, and the step whose weights a run keeps.

With ``train.eval_data`` and ``train.eval_every``, every ``eval_every`` optimizer steps (and at
the last) the loop scores the policy on held-out preference pairs: the share of pairs whose
implicit reward prefers the winner (DPO's ``inside > 0`` against the reference, averaged over
``train.eval_draws`` fixed noise draws, the same draws at every step). Each evaluation is a line
of ``RUN/eval.jsonl`` (``step``, ``eval_implicit_acc``, ``eval_stderr``, ``eval_reward_margin``,
``eval_pairs``) and, with a ``train.select_step`` other than ``last``, a snapshot of the result
weights in ``RUN/steps/step_NNNNNNN/``.

``train.select_step`` picks the step whose weights become the run's result (``RUN/lora`` or the
tuned denoiser), recorded in ``RUN/selection.json``:

- ``last``: the final step's (no snapshots);
- ``best``: the evaluated step with the highest accuracy (the earliest of equals);
- ``one_se``: the earliest evaluated step whose accuracy is within one standard error of the
  best (Breiman's one-standard-error rule), the standard error being the best step's binomial
  ``sqrt(a (1 - a) / n)`` over the ``n`` pairs. A rising curve that flattens is cut where it
  flattens, not at its noisiest peak.
"""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from prefdiff.errors import ConfigError

EVAL_FILE = "eval.jsonl"
SNAPSHOTS = "steps"
SELECTION_FILE = "selection.json"
SELECT_RULES = ("last", "best", "one_se")


@dataclass(frozen=True)
class EvalPoint:
    step: int
    accuracy: float
    pairs: int

    @property
    def stderr(self) -> float:
        return math.sqrt(max(self.accuracy * (1.0 - self.accuracy), 0.0) / max(self.pairs, 1))


def choose_step(points: list[EvalPoint], rule: str) -> EvalPoint:
    """The point ``rule`` picks from an evaluation curve (see the module docstring)."""
    if not points:
        raise ValueError("no evaluation to choose a step from")
    if rule not in SELECT_RULES:
        raise ValueError(f"unknown selection rule {rule!r}: expected one of {', '.join(SELECT_RULES)}")
    ordered = sorted(points, key=lambda p: p.step)
    if rule == "last":
        return ordered[-1]
    best = max(ordered, key=lambda p: p.accuracy)  # max keeps the first of equals: the earliest
    if rule == "best":
        return best
    threshold = best.accuracy - best.stderr
    return next(p for p in ordered if p.accuracy >= threshold - 1e-12)


def snapshot_dir(run_dir: Path, step: int) -> Path:
    return run_dir / SNAPSHOTS / f"step_{step:07d}"


def read_curve(run_dir: Path, up_to: int | None = None) -> list[dict[str, Any]]:
    """The evaluations of ``RUN/eval.jsonl`` (those at or before step ``up_to`` when given)."""
    path = run_dir / EVAL_FILE
    if not path.is_file():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [row for row in rows if up_to is None or row["step"] <= up_to]


def drop_evaluations_after(run_dir: Path, step: int) -> None:
    """On resume from ``step``: forget later evaluations and snapshots (of the abandoned attempt)."""
    rows = read_curve(run_dir, up_to=step)
    if (run_dir / EVAL_FILE).is_file():
        (run_dir / EVAL_FILE).write_text("".join(json.dumps(row) + "\n" for row in rows))
    for folder in sorted((run_dir / SNAPSHOTS).glob("step_*")) if (run_dir / SNAPSHOTS).is_dir() else []:
        if int(folder.name.removeprefix("step_")) > step:
            shutil.rmtree(folder, ignore_errors=True)


def select_result(run_dir: Path, result: Path, rule: str, max_steps: int) -> dict[str, Any]:
    """Replace ``result`` (the final weights) by the snapshot of the step ``rule`` picks from the
    run's curve, and write ``RUN/selection.json``; returns what it wrote."""
    rows = read_curve(run_dir)
    points = [EvalPoint(row["step"], row["eval_implicit_acc"], row["eval_pairs"]) for row in rows]
    chosen = choose_step(points, rule)
    if rule != "last" and chosen.step != max_steps:
        source = snapshot_dir(run_dir, chosen.step) / result.name
        if not source.exists():
            raise FileNotFoundError(
                f"{source}: the snapshot of step {chosen.step} is missing; the run cannot select it"
            )
        staged = result.with_name(result.name + ".selecting")
        shutil.rmtree(staged, ignore_errors=True)
        shutil.copytree(source, staged)  # whole before the swap: an interruption leaves a result
        old = result.with_name(result.name + ".replaced")
        shutil.rmtree(old, ignore_errors=True)
        if result.exists():
            result.rename(old)
        staged.rename(result)
        shutil.rmtree(old, ignore_errors=True)
    record = {
        "rule": rule,
        "step": chosen.step,
        "max_steps": max_steps,
        "eval_implicit_acc": chosen.accuracy,
        "eval_stderr": chosen.stderr,
        "best_step": choose_step(points, "best").step,
        "curve": [{"step": p.step, "eval_implicit_acc": p.accuracy} for p in sorted(points, key=lambda p: p.step)],
    }
    (run_dir / SELECTION_FILE).write_text(json.dumps(record, indent=2) + "\n")
    return record


EVAL_SEED = 1234  # the held-out pairs' noise draws: EVAL_SEED + k, fixed across steps and runs


EvalPairs = tuple[Any, Any, int]  # the slot-indexed pairs, their collate, how many


def load_eval_pairs(config: Any, backbone: Any) -> EvalPairs:
    """``train.eval_data``'s pairs (no flips, every pair), or a ConfigError naming the key."""
    from dataclasses import replace

    from prefdiff.errors import PrefdiffError
    from prefdiff.train.components import build_pair_data

    data = replace(config.data, path=config.train.eval_data, random_flip=False, max_pairs=None)
    try:
        stream, collate = build_pair_data(data, EVAL_SEED, backbone)
        size = len(stream)  # type: ignore[arg-type]
    except (PrefdiffError, OSError) as err:
        raise ConfigError(f"config key 'train.eval_data': {err}") from None
    if size == 0:
        raise ConfigError(f"config key 'train.eval_data': {config.train.eval_data} holds no pairs")
    return stream, collate, size


class HeldOutEval:
    """Measures the policy's implicit accuracy on ``train.eval_data`` (every process computes the
    whole set, the same way, so a sharded policy's collectives line up)."""

    def __init__(self, config: Any, backbone: Any, reference: Any, device: torch.device, pairs: EvalPairs) -> None:
        from prefdiff.objectives.dpo import DPOObjective

        self.config, self.backbone, self.reference, self.device = config, backbone, reference, device
        self.stream, self.collate, self.pairs = pairs
        self.objective = DPOObjective(beta=1.0)  # the sign of inside does not depend on beta

    @classmethod
    def build(
        cls,
        config: Any,
        backbone: Any,
        reference: Any,
        policy: Any,
        autocast: Any,
        device: torch.device,
        pairs: EvalPairs,
    ) -> HeldOutEval:
        """The evaluator, with the run's own reference when it can score new pairs (a live one), else
        the LoRA policy with its adapters off; a full fine-tune without a live reference is refused."""
        from prefdiff.train.reference import AdapterDisabledReference
        from prefdiff.train.reference_cache import CachedReference

        if reference is None or isinstance(reference, CachedReference):  # LoRA: validate() refused the rest
            reference = AdapterDisabledReference(policy, autocast)
        return cls(config, backbone, reference, device, pairs)

    @torch.no_grad()
    def measure(self, policy: Any, step: int) -> dict[str, Any]:
        from prefdiff.evaluate.implicit import accuracy_of, pair_margins

        was_training = policy.training
        policy.eval()
        try:
            inside = pair_margins(
                self.backbone,
                self.objective,
                policy,
                self.reference,
                self.stream,
                self.collate,
                self.config.data.resolution,
                self.config.train.eval_draws,
                self.config.train.batch_size,
                EVAL_SEED,
                self.device,
                progress=False,
            )
        finally:
            policy.train(was_training)
        point = EvalPoint(step, accuracy_of(inside), self.pairs)
        return {
            "step": step,
            "eval_implicit_acc": point.accuracy,
            "eval_stderr": point.stderr,
            "eval_reward_margin": float(inside.mean()),
            "eval_pairs": self.pairs,
        }


def append_evaluation(run_dir: Path, row: dict[str, Any]) -> None:
    with (run_dir / EVAL_FILE).open("a") as f:
        f.write(json.dumps(row) + "\n")
