"""The data stream the trainer reads: an endless, seeded sequence of *slots*.

Slot ``s`` is pair ``perm_e[s % N]`` with epoch ``e = s // N`` and ``perm_e`` a permutation
seeded by (seed, e). A micro-step of the whole job consumes ``batch_size x processes``
consecutive slots; process ``r`` takes its ``r``-th share. The position (next slot) is all that
resume needs, and every random draw for a pair (noise, crop, flip) is keyed by its slot, so a
run's numbers do not depend on how pairs are split over processes or accumulation steps.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch.utils.data import Dataset, Sampler

from prefdiff.config import DataConfig
from prefdiff.data.pickapic import ReadReport, read_pickapic
from prefdiff.data.schema import PreferencePair, open_image
from prefdiff.data.transforms import transform_pair
from prefdiff.errors import DataError
from prefdiff.models.base import pair_generator

log = logging.getLogger("prefdiff.data")

TRANSFORM_STREAM = 1  # pair_generator stream for crops and flips (0 is the noise stream)


def epoch_permutation(seed: int, epoch: int, size: int) -> torch.Tensor:
    """The seeded order of ``size`` pairs in ``epoch``: shared by every slot-indexed dataset
    (in-memory pairs and the latent cache), so both visit pairs in the same order."""
    return torch.randperm(size, generator=pair_generator(seed, epoch, stream=2))


class PairStream(Dataset):
    """Map-style dataset indexed by slot (any non-negative int)."""

    def __init__(
        self,
        pairs: Sequence[PreferencePair],
        resolution: int,
        seed: int,
        center_crop: bool = True,
        random_flip: bool = False,
        shuffle: bool = True,
    ) -> None:
        if len(pairs) == 0:
            raise DataError("the dataset has no usable pairs (after dropping ties and bad rows)")
        self.pairs = pairs
        self.resolution = resolution
        self.seed = seed
        self.center_crop = center_crop
        self.random_flip = random_flip
        self.shuffle = shuffle
        self._perms: dict[int, torch.Tensor] = {}

    def __len__(self) -> int:
        return len(self.pairs)

    def pair_index(self, slot: int) -> int:
        epoch, offset = divmod(slot, len(self.pairs))
        if not self.shuffle:
            return offset
        if epoch not in self._perms:
            self._perms = {epoch: epoch_permutation(self.seed, epoch, len(self.pairs))}
        return int(self._perms[epoch][offset])

    def __getitem__(self, slot: int) -> dict[str, Any]:
        pair = self.pairs[self.pair_index(slot)]
        try:
            winner = open_image(pair.winner, f"{pair.source} row {pair.row_id} winner")
            loser = open_image(pair.loser, f"{pair.source} row {pair.row_id} loser")
        except ValueError as err:
            raise DataError(str(err)) from None
        gen = pair_generator(self.seed, slot, stream=TRANSFORM_STREAM)
        won, lost = transform_pair(winner, loser, self.resolution, self.center_crop, self.random_flip, gen)
        return {
            "slot": slot,
            "prompt": pair.prompt,
            "winner_pixels": won.pixels,
            "loser_pixels": lost.pixels,
            "original_size": (won.original_size, lost.original_size),
            "crop_top_left": (won.crop_top_left, lost.crop_top_left),
        }


def collate_pairs(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack ``P`` pairs; micro-conditioning is laid out ``[winners; losers]`` (``[2P, 2]``)."""
    return {
        "slots": [item["slot"] for item in items],
        "prompts": [item["prompt"] for item in items],
        "winner_pixels": torch.stack([item["winner_pixels"] for item in items]),
        "loser_pixels": torch.stack([item["loser_pixels"] for item in items]),
        "original_size": torch.tensor(
            [item["original_size"][0] for item in items] + [item["original_size"][1] for item in items]
        ),
        "crop_top_left": torch.tensor(
            [item["crop_top_left"][0] for item in items] + [item["crop_top_left"][1] for item in items]
        ),
    }


class SlotBatchSampler(Sampler[list[int]]):
    """Endless batches of slots for one process, starting at global slot ``start``."""

    def __init__(self, start: int, batch_size: int, rank: int = 0, world_size: int = 1) -> None:
        self.start = start
        self.batch_size = batch_size
        self.rank = rank
        self.world_size = world_size

    def __iter__(self) -> Iterator[list[int]]:
        slot = self.start
        global_batch = self.batch_size * self.world_size
        while True:
            first = slot + self.rank * self.batch_size
            yield list(range(first, first + self.batch_size))
            slot += global_batch

    def __len__(self) -> int:  # pragma: no cover - endless; DataLoader only asks for len() in some paths
        return 2**62


def load_pairs(config: DataConfig) -> list[PreferencePair]:
    """The preference pairs named by ``config.path`` (Pick-a-Pic-style parquet), winner first."""
    if not config.path:
        raise DataError("config key 'data.path' is empty: give a Pick-a-Pic-style parquet file or directory")
    report = ReadReport()
    pairs = []
    for pair in read_pickapic(config.path, drop_ties=config.drop_ties, report=report):
        pairs.append(pair)
        if config.max_pairs is not None and len(pairs) >= config.max_pairs:
            break
    log.info("data %s: %s", config.path, report.summary())
    if not pairs:
        raise DataError(f"{config.path}: no usable pairs ({report.summary()})")
    return pairs


def build_pair_stream(config: DataConfig, seed: int) -> PairStream:
    """The slot-indexed training dataset for ``config`` (the trainer's one entry point to data)."""
    return PairStream(load_pairs(config), config.resolution, seed, config.center_crop, config.random_flip)
