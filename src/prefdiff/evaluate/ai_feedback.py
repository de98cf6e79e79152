"""AI feedback (the paper's second experiment): two images per prompt from a model, scored by a
reward model (or a weighted mix), written as a Pick-a-Pic-format parquet that the data readers
take as it is. Near-equal scores become ties (``label_0 = 0.5``), dropped at training time by
default like Pick-a-Pic's. With a Bradley-Terry temperature ``T`` each row also carries the soft
label ``preference_0 = sigmoid((score_0 - score_1) / T)`` that ``data.soft_labels=true`` trains on.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from prefdiff.devices import process_state
from prefdiff.errors import ConfigError
from prefdiff.evaluate.generate import Placement, SamplerSettings, generate_prompt_set
from prefdiff.manifests import ImagePairs, read_manifest
from prefdiff.pickapic_parquet import PickapicRow, write_pickapic_parquet
from prefdiff.stats import bradley_terry_preference


def label_with_ai(
    model: Path,
    prompts_file: Path,
    scorer_spec: str,
    out: Path,
    lora: Path | None = None,
    settings: SamplerSettings | None = None,
    tie_threshold: float = 0.0,
    base_seed: int = 0,
    batch_size: int = 4,
    temperature: float | None = None,
    placement: Placement | None = None,
    score_batch_size: int = 16,
) -> dict[str, Any]:
    """Generate 2 images per prompt into ``out/images``, score them, write ``out/pairs.parquet``.

    ``label_0`` is 1 when image 0 scores higher by more than ``tie_threshold``, 0 when image 1
    does, 0.5 otherwise; with ``temperature`` the rows carry ``preference_0`` too. The pipeline
    runs where ``placement`` says (default: the GPU when there is one, fp32), the scorer on the
    same device in the same precision, ``score_batch_size`` images per call. Under ``accelerate
    launch`` each process generates and scores its share of the prompts and the main one writes
    the parquet (the others return {}). Returns counts."""
    from prefdiff.devices import resolve_dtype
    from prefdiff.evaluate.scorers import load_mixed
    from prefdiff.evaluate.sharded import gather_rows, my_share

    if tie_threshold < 0:
        raise ConfigError(f"--tie-threshold must be >= 0 (got {tie_threshold})")
    if temperature is not None and not temperature > 0:
        raise ConfigError(f"--temperature must be > 0 (got {temperature})")
    images_dir = out / "images"
    if score_batch_size < 1:
        raise ConfigError(f"--score-batch-size must be >= 1 (got {score_batch_size})")
    placement = placement or Placement()
    placement.resolve()  # an absent device or precision is one line before any work
    generate_prompt_set(
        model,
        prompts_file,
        2,
        images_dir,
        lora,
        settings=settings,
        base_seed=base_seed,
        batch_size=batch_size,
        placement=placement,
    )
    state = process_state()
    device, _ = placement.resolve(state.device if state is not None else None)
    scorer = load_mixed(scorer_spec, device, resolve_dtype(placement.dtype, device))
    pairs = manifest_pairs(images_dir)
    indices, mine = zip(*my_share(pairs, state), strict=True) if pairs else ((), ())
    values = score_pairs(images_dir, list(mine), scorer, score_batch_size)
    scored = [[index, s0, s1] for index, (s0, s1) in zip(indices, values, strict=True)]
    if state is not None:
        scored = gather_rows(out, "label_scores", scored, state)
        if not state.is_main_process:
            return {}
    scores = [(float(s0), float(s1)) for _, s0, s1 in sorted(scored)]
    labels = [1.0 if s0 - s1 > tie_threshold else 0.0 if s1 - s0 > tie_threshold else 0.5 for s0, s1 in scores]
    preferences = None
    if temperature is not None:
        preferences = [bradley_terry_preference(s0, s1, temperature) for s0, s1 in scores]
    write_pair_parquet(out / "pairs.parquet", images_dir, pairs, labels, scores, str(model), preferences)
    counts = {
        "pairs": len(pairs),
        "ties": sum(1 for v in labels if v == 0.5),
        "scorer": scorer_spec,
        "tie_threshold": tie_threshold,
        "temperature": temperature,
        "device": str(device),
        "dtype": placement.dtype,
    }
    (out / "label_ai.json").write_text(json.dumps(counts, indent=2) + "\n")
    return counts


def score_pairs(images_dir: Path, pairs: ImagePairs, scorer: Any, score_batch_size: int) -> list[tuple[float, float]]:
    """``(score of image 0, score of image 1)`` per pair, both images of a pair in one scorer
    call, ``score_batch_size`` images per call."""
    from PIL import Image
    from tqdm.auto import tqdm

    per_call = max(1, score_batch_size // 2)  # pairs per scorer call
    scores: list[tuple[float, float]] = []
    for start in tqdm(range(0, len(pairs), per_call), desc="score", unit="call", disable=len(pairs) <= per_call):
        chunk = pairs[start : start + per_call]
        images = [Image.open(images_dir / r.file).convert("RGB") for pair in chunk for r in pair]
        values = scorer.score(images, [first.prompt for first, _ in chunk for _ in range(2)])
        scores += [(float(s0), float(s1)) for s0, s1 in zip(values[0::2], values[1::2], strict=True)]
    return scores


def manifest_pairs(images_dir: Path) -> ImagePairs:
    """Images 0 and 1 of every prompt in ``images_dir/manifest.jsonl``, in prompt order."""
    records = read_manifest(images_dir)
    return [(records[(p, 0)], records[(p, 1)]) for p in sorted({p for p, _ in records})]


AI_FEEDBACK_COLUMNS = (
    "caption", "jpg_0", "jpg_1", "label_0", "label_1", "score_0", "score_1", "model_0", "model_1",
    "image_0_uid", "image_1_uid", "best_image_uid", "ranking_id", "has_label", "are_different",
)  # fmt: skip
"""The columns of an AI-feedback parquet: Pick-a-Pic's with the rater's scores."""


def write_pair_parquet(
    path: Path,
    images_dir: Path,
    pairs: ImagePairs,
    labels: list[float],
    scores: list[tuple[float, float]] | None = None,
    model: str = "",
    preferences: list[float] | None = None,
) -> Path:
    """Write Pick-a-Pic-format rows for ``pairs`` of manifest images (in ``images_dir``,
    embedded as PNG bytes) with ``label_0`` from ``labels`` (1, 0 or 0.5), in one row group;
    ``preferences`` (P(image 0 preferred) per pair) adds the ``preference_0`` column."""
    rows = []
    for index, ((first, second), label_0) in enumerate(zip(pairs, labels, strict=True)):
        score_0, score_1 = scores[index] if scores is not None else (None, None)
        uid_0, uid_1 = (f"p{r.prompt_index}_i{r.image_index}_s{r.seed}" for r in (first, second))
        rows.append(PickapicRow(
            caption=first.prompt, jpg_0=(images_dir / first.file).read_bytes(),
            jpg_1=(images_dir / second.file).read_bytes(), label_0=float(label_0),
            ranking_id=first.prompt_index, image_0_uid=uid_0, image_1_uid=uid_1,
            model_0=model, model_1=model, extra={"score_0": score_0, "score_1": score_1},
            preference_0=preferences[index] if preferences is not None else None,
        ))  # fmt: skip
    columns = (*AI_FEEDBACK_COLUMNS, "preference_0") if preferences is not None else AI_FEEDBACK_COLUMNS
    write_pickapic_parquet(path, rows, columns)
    return path
