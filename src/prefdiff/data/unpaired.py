"""Unpaired data: single images labelled desirable or undesirable, for objectives on per-image
feedback (``kto``).

Two sources, one batch (an unpaired :class:`~prefdiff.data.batch.PairBatch`):

- **images.jsonl**: lines ``{"prompt": ..., "image": ..., "desirable": true|false}``, image paths
  relative to the file (a like/dislike log, or the label app's export ``unpaired/images.jsonl``).
  ``data.path`` names the file or a folder holding it. Read into memory (paths only); slot ``s``
  is ``images[perm_e[s % N]]`` with the same seeded permutation per epoch as pairs.
- **data.unpaired=true** on any pair data (Pick-a-Pic, pair folders, mapped files, a latent
  cache, streamed or not): Diffusion-KTO's conversion of pairwise preferences, the winner of each
  pair desirable and its loser undesirable. Unpaired slot ``s`` is image ``s % 2`` (0: the
  winner) of the pair at paired slot ``s // 2``, so a converted dataset is twice as long as the
  pairs it came from, and both images of a pair are labelled once per epoch. Ties carry no
  per-image label: ``data.unpaired`` needs ``data.drop_ties=true``.

Mismatched prompts, for KTO's reference point (:mod:`prefdiff.objectives.kto`): the image at slot
``s`` also carries the prompt of the next sample, slot ``s + 1`` (the next pair's, ``s // 2 + 1``,
when converted), so the pairing is a function of the slot alone and the reference point does not
depend on how slots are split over micro-batches and processes.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from prefdiff.config import DataConfig
from prefdiff.data.batch import LatentStats, PairBatch
from prefdiff.data.dataset import MAX_SUBSTITUTES, TRANSFORM_STREAM, EpochOrder, SlotDataset
from prefdiff.data.report import ReadReport, Reject
from prefdiff.data.schema import ImageSource, check_image, image_source, open_image
from prefdiff.data.transforms import transform_images
from prefdiff.errors import DataError
from prefdiff.jsonl import json_lines
from prefdiff.models.base import pair_generator

log = logging.getLogger("prefdiff.data")

IMAGES_FILE = "images.jsonl"
IMAGE_KEYS = ("prompt", "image", "desirable")


@dataclass
class LabelledImage:
    """One prompt and one image of it, ``desirable`` or not; ``row_id`` is ``file:line``."""

    prompt: str
    image: ImageSource
    desirable: bool
    row_id: str = ""


def images_file(path: str | Path) -> Path | None:
    """The ``images.jsonl`` that ``path`` names (the file, or a folder holding one), else None."""
    path = Path(path)
    if path.is_dir():
        path = path / IMAGES_FILE
    return path if path.name == IMAGES_FILE and path.is_file() else None


def _desirable(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float) and value in (0, 1):
        return bool(value)
    return None


def _parse(value: Any, base: Path, check: str) -> LabelledImage | Reject:
    if not isinstance(value, dict):
        return Reject("not a JSON object")
    missing = [key for key in IMAGE_KEYS if key not in value]
    if missing:
        return Reject("missing key", detail=", ".join(missing))
    prompt = value["prompt"]
    if not isinstance(prompt, str) or not prompt.strip():
        return Reject("empty prompt")
    desirable = _desirable(value["desirable"])
    if desirable is None:
        return Reject("bad desirable", detail=f"expected true or false, got {value['desirable']!r}")
    source = image_source(value["image"], base)
    if source is None:
        return Reject("bad image", detail=f"expected a path, got {value['image']!r}")
    try:
        check_image(source, "image", check)  # type: ignore[arg-type]
    except ValueError as err:
        return Reject("corrupt image", detail=str(err))
    return LabelledImage(prompt, source, desirable)


def read_images_jsonl(path: Path, config: DataConfig) -> list[LabelledImage]:
    """Every usable line of ``path`` (at most ``data.max_pairs`` images). A bad line raises a
    DataError naming the file and line with ``data.strict``; otherwise it is skipped and counted."""
    report = ReadReport()
    images: list[LabelledImage] = []
    for number, value in json_lines(path):
        row_id = f"{path.name}:{number}"
        if isinstance(value, Exception):
            parsed: LabelledImage | Reject = Reject("not JSON", detail=str(value))
        else:
            parsed = _parse(value, path.parent, config.check_images)
        if isinstance(parsed, Reject):
            report.reject(parsed, row_id, f"{path} line {number}", config.strict)
            continue
        parsed.row_id = row_id
        images.append(parsed)
        report.kept += 1
        if config.max_pairs is not None and len(images) >= config.max_pairs:
            report.stopped_at_max_pairs = True
            break
    desirable = sum(image.desirable for image in images)
    log.info("data %s (images_jsonl, %d desirable): %s", path, desirable, report.summary())
    if not images:
        raise DataError(f"{path}: no usable images ({report.summary()})")
    return images


class ImageStream(Dataset):
    """In memory, from images.jsonl: slot ``s`` is ``images[perm_e[s % N]]``. An image that
    cannot be decoded is replaced by the next slot's, unless ``data.strict``."""

    def __init__(self, images: list[LabelledImage], config: DataConfig, seed: int) -> None:
        self.images = images
        self.config = config
        self.seed = seed
        self.substitutions: Counter[str] = Counter()
        self._index = EpochOrder(seed, len(images))

    def __len__(self) -> int:
        return len(self.images)

    def record(self, slot: int) -> LabelledImage:
        return self.images[self._index(slot)]

    def __getitem__(self, slot: int) -> dict[str, Any]:
        for attempt in range(MAX_SUBSTITUTES):
            record = self.record(slot + attempt)
            try:
                image = open_image(record.image)
                break
            except ValueError as err:
                if self.config.strict:
                    raise DataError(f"{record.row_id}: corrupt image ({err}) (data.strict=true)") from None
                self.substitutions["corrupt image"] += 1
                log.warning("slot %d: %s: corrupt image (%s); substituting the next image", slot, record.row_id, err)
        else:
            raise DataError(f"slot {slot}: {MAX_SUBSTITUTES} images in a row could not be decoded")
        gen = pair_generator(self.seed, slot, stream=TRANSFORM_STREAM)
        (out,) = transform_images(
            [image], self.config.resolution, self.config.center_crop, self.config.random_flip, gen
        )
        return {
            "slot": slot,
            "prompt": record.prompt,
            "desirable": float(record.desirable),
            "pixels": out.pixels,
            "original_size": out.original_size,
            "crop_top_left": out.crop_top_left,
            "mismatched_prompt": self.record(slot + 1).prompt,
        }


class UnpairedView(Dataset):
    """``data.unpaired=true``: the pairs of a paired slot dataset (decoded on the fly, streamed
    or cached) as single labelled images, winner desirable and loser undesirable."""

    def __init__(self, paired: Any) -> None:
        self.paired = paired
        self._last: tuple[int, dict[str, Any]] | None = None  # slots 2k and 2k+1 share pair k

    def __len__(self) -> int:
        return 2 * len(self.paired)

    def _pair(self, pair_slot: int) -> dict[str, Any]:
        if self._last is None or self._last[0] != pair_slot:
            self._last = (pair_slot, self.paired[pair_slot])
        return self._last[1]

    def _mismatched(self, pair_slot: int) -> dict[str, Any]:
        """The next pair's prompt, read without decoding its images."""
        if isinstance(self.paired, SlotDataset):
            return {"mismatched_prompt": self.paired.prompt_of(pair_slot + 1)}
        return {"mismatched_prompt_cond": self.paired.prompt_cond_of(pair_slot + 1)}

    def __getitem__(self, slot: int) -> dict[str, Any]:
        pair_slot, index = divmod(slot, 2)
        pair = self._pair(pair_slot)
        side = ("winner", "loser")[index]
        item: dict[str, Any] = {"slot": slot, "desirable": 1.0 if index == 0 else 0.0}
        item["original_size"] = pair["original_size"][index]
        item["crop_top_left"] = pair["crop_top_left"][index]
        if "prompt_cond" in pair:  # a latent cache
            item["prompt_cond"] = pair["prompt_cond"]
            item["latent_mean"] = pair[f"{side}_latent_mean"]
            item["latent_std"] = pair[f"{side}_latent_std"]
        else:
            item["prompt"] = pair["prompt"]
            item["pixels"] = pair[f"{side}_pixels"]
        return item | self._mismatched(pair_slot)


def collate_unpaired(items: list[dict[str, Any]]) -> PairBatch:
    """Stack ``P`` labelled images into an unpaired :class:`PairBatch`: pixels and prompts, or
    cached latents and text conditioning."""
    common: dict[str, Any] = {
        "slots": [item["slot"] for item in items],
        "labels": torch.tensor([float(item["desirable"]) for item in items]),
        "original_size": torch.stack([torch.as_tensor(item["original_size"]) for item in items]),
        "crop_top_left": torch.stack([torch.as_tensor(item["crop_top_left"]) for item in items]),
        "unpaired": True,
    }
    if "latent_mean" in items[0]:
        keys = items[0]["prompt_cond"]
        return PairBatch(
            **common,
            prompt_cond={key: torch.stack([item["prompt_cond"][key] for item in items]) for key in keys},
            mismatched_prompt_cond={
                key: torch.stack([item["mismatched_prompt_cond"][key] for item in items]) for key in keys
            },
            winner_latents=LatentStats(
                torch.stack([item["latent_mean"] for item in items]),
                torch.stack([item["latent_std"] for item in items]),
            ),
        )
    return PairBatch(
        **common,
        prompts=[item["prompt"] for item in items],
        mismatched_prompts=[item["mismatched_prompt"] for item in items],
        winner_pixels=torch.stack([item["pixels"] for item in items]),
    )


__all__ = [
    "IMAGES_FILE",
    "ImageStream",
    "LabelledImage",
    "UnpairedView",
    "collate_unpaired",
    "images_file",
    "read_images_jsonl",
]
