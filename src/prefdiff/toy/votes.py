"""The quickstart's labelling stage: score on-policy pairs with the oracle, calibrate the raters
on the training pairs, let five raters vote on every pair, and write Pick-a-Pic parquets: the
majority as ``label_0``, the raters' vote fraction for image 0 as ``preference_0`` (the soft label
of ``data.soft_labels=true``; a tie vote counts half)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from prefdiff.evaluate.ai_feedback import manifest_pairs, write_pair_parquet
from prefdiff.evaluate.scorers.base import ScorerError
from prefdiff.manifests import ManifestImage
from prefdiff.stats import vote_fraction
from prefdiff.toy.config import ToyConfig
from prefdiff.toy.raters import (
    agreement_with_oracle,
    calibrate_temperature,
    expected_agreement,
    panel_verdicts,
)


def score_files(images_dir: Path, records: list[ManifestImage], scorer: Any, desc: str, batch: int = 64) -> list[float]:
    """The scorer's score of each record's image (with its prompt), with a progress bar."""
    from PIL import Image
    from tqdm.auto import tqdm

    scores: list[float] = []
    for start in tqdm(range(0, len(records), batch), desc=desc, unit="batch", disable=len(records) <= batch):
        chunk = records[start : start + batch]
        images = [Image.open(images_dir / r.file).convert("RGB") for r in chunk]
        for record, score in zip(chunk, scorer.score(images, [r.prompt for r in chunk]), strict=True):
            if not math.isfinite(score):
                raise ScorerError(
                    f"{scorer.name} returned {score} for {images_dir / record.file} (caption {record.prompt!r}): "
                    "scores must be finite numbers"
                )
            scores.append(float(score))
    return scores


PAIR_SETS = ("train", "heldout", "validation")  # the order fixes each set's vote seed


def label_pairs(pairs_dir: Path, out: Path, scorer: Any, toy: ToyConfig) -> dict[str, Any]:
    """Write ``out/train.parquet``, ``out/heldout.parquet``, ``out/validation.parquet`` (when the
    pairs have a validation set) and ``out/votes.json``."""
    stats: dict[str, Any] = {"oracle": scorer.name, "raters": toy.raters, "rater_agreement_asked": toy.rater_agreement}
    temperature = None
    for index, name in enumerate(PAIR_SETS):
        images_dir = pairs_dir / name
        if name == "validation" and not images_dir.is_dir():
            continue
        pairs = manifest_pairs(images_dir)
        flat = [r for pair in pairs for r in pair]
        scores = score_files(images_dir, flat, scorer, desc=f"oracle ({name})")
        score_0, score_1 = np.asarray(scores[0::2]), np.asarray(scores[1::2])
        diffs = score_0 - score_1
        if temperature is None:  # calibrated once, on the base model's training pairs
            temperature = calibrate_temperature(diffs, toy.rater_agreement)
            stats["temperature"] = temperature
            stats["calibration_pairs"] = int((diffs != 0).sum())
        verdicts = panel_verdicts(score_0, score_1, temperature, seed=toy.seed * 1000 + index, raters=toy.raters)
        labels = [v.label_0 for v in verdicts]
        write_pair_parquet(
            out / f"{name}.parquet",
            images_dir,
            pairs,
            labels,
            list(zip(score_0.tolist(), score_1.tolist(), strict=True)),
            "toy base",
            [vote_fraction(v.votes_a, v.votes_b, v.ties) for v in verdicts],
        )
        decided = diffs != 0
        single = sum(
            (v.votes_a if d > 0 else v.votes_b) + 0.5 * v.ties for v, d in zip(verdicts, diffs, strict=True) if d != 0
        ) / max(1, int(decided.sum()) * toy.raters)
        stats[name] = {
            "pairs": len(pairs),
            "ties": sum(1 for label in labels if label == 0.5),
            "oracle_ties": int((~decided).sum()),
            "single_rater_agreement": single,
            "single_rater_agreement_expected": expected_agreement(diffs, temperature),
            "majority_agreement": agreement_with_oracle(diffs.tolist(), labels),
            "mean_abs_score_difference": float(np.abs(diffs).mean()),
        }
    (out / "votes.json").write_text(json.dumps(stats, indent=2) + "\n")
    return stats
