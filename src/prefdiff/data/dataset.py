"""The data stream the trainer reads: an endless, seeded sequence of *slots*.

Slot ``s`` is a pair of epoch ``e = s // N``; which pair is a seeded function of ``(seed, s)``:
``perm_e[s % N]`` in memory, or a window position when streaming (``streaming.py``). A
micro-step of the whole job consumes ``batch_size x processes`` consecutive slots; process ``r``
takes its ``r``-th share. The position (next slot) is all that resume needs, and every random
draw for a pair (noise, crop, flip) is keyed by its slot, so a run's numbers do not depend on how
pairs are split over processes or accumulation steps.

A pair whose image cannot be decoded at training time is replaced, unless ``data.strict``, by
the next candidate (the next slot's pair in memory, the next pair of the window when streaming);
the crop and flip stay keyed by the original slot. Substitutions are counted and logged.

Each item's ``preference`` is the pair's preference probability with ``data.soft_labels`` (see
:class:`~prefdiff.data.schema.PreferencePair`) and 1.0 (a hard label) without; the collate puts
it in ``PairBatch.labels``.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch.utils.data import Dataset, Sampler

from prefdiff.config import DataConfig
from prefdiff.data.batch import PairBatch
from prefdiff.data.columnar import total_bytes
from prefdiff.data.readers import DataSource, iter_source, resolve
from prefdiff.data.report import ReadReport, Reject
from prefdiff.data.schema import PreferencePair, open_image
from prefdiff.data.streaming import Candidate, WindowedPairs, build_index
from prefdiff.data.transforms import transform_pair
from prefdiff.errors import ConfigError, DataError
from prefdiff.models.base import pair_generator

log = logging.getLogger("prefdiff.data")

TRANSFORM_STREAM = 1  # pair_generator stream for crops and flips (0 is the noise stream)
MAX_SUBSTITUTES = 64  # consecutive undecodable pairs before giving up


def epoch_permutation(seed: int, epoch: int, size: int) -> torch.Tensor:
    """The seeded order of ``size`` pairs in ``epoch``: shared by every slot-indexed dataset
    (in-memory pairs and the latent cache), so both visit pairs in the same order."""
    return torch.randperm(size, generator=pair_generator(seed, epoch, stream=2))


class EpochOrder:
    """Slot -> position in a sequence of ``size`` items: ``perm_e[s % size]`` with the seeded
    :func:`epoch_permutation` of epoch ``e = s // size`` (the latest epoch's kept), or
    ``s % size`` unshuffled. Shared by every in-memory slot dataset and the latent cache."""

    def __init__(self, seed: int, size: int, shuffle: bool = True) -> None:
        self.seed = seed
        self.size = size
        self.shuffle = shuffle
        self._perms: dict[int, torch.Tensor] = {}

    def __call__(self, slot: int) -> int:
        epoch, offset = divmod(slot, self.size)
        if not self.shuffle:
            return offset
        if epoch not in self._perms:
            self._perms = {epoch: epoch_permutation(self.seed, epoch, self.size)}
        return int(self._perms[epoch][offset])


class SlotDataset(Dataset):
    """Map-style dataset indexed by slot (any non-negative int): decode, substitute, transform."""

    def __init__(
        self, resolution: int, seed: int, center_crop: bool, random_flip: bool, strict: bool, soft_labels: bool = False
    ) -> None:
        self.resolution = resolution
        self.soft_labels = soft_labels
        self.seed = seed
        self.center_crop = center_crop
        self.random_flip = random_flip
        self.strict = strict
        self.substitutions: Counter[str] = Counter()  # reason -> count, in this process

    def candidate(self, slot: int, attempt: int) -> Candidate:
        """The pair for ``slot``, or its ``attempt``-th substitute."""
        raise NotImplementedError

    def prompt_of(self, slot: int) -> str:
        """The prompt of the pair ``slot`` holds (its first readable candidate), without decoding
        any image: the mismatched prompts of :mod:`prefdiff.data.unpaired`."""
        for attempt in range(MAX_SUBSTITUTES):
            pair = self.candidate(slot, attempt).pair
            if not isinstance(pair, Reject):
                return pair.prompt
        raise DataError(f"slot {slot}: {MAX_SUBSTITUTES} rows in a row are unusable")

    def __getitem__(self, slot: int) -> dict[str, Any]:
        """``{"slot", "prompt", "preference", "winner_pixels" [3,R,R], "loser_pixels" [3,R,R],
        "original_size" ((h, w) winner, (h, w) loser), "crop_top_left" (winner, loser)}``."""
        for attempt in range(MAX_SUBSTITUTES):
            found = self.candidate(slot, attempt)
            decoded = _decode(found)
            if not isinstance(decoded, Reject):
                pair, winner, loser = decoded
                break
            if self.strict:
                detail = f" ({decoded.detail})" if decoded.detail else ""
                raise DataError(f"{found.where}: {decoded.reason}{detail} (data.strict=true)")
            self.substitutions[decoded.reason] += 1
            log.warning(
                "slot %d: %s: %s (%s); substituting the next pair", slot, found.row_id, decoded.reason, decoded.detail
            )
        else:
            raise DataError(f"slot {slot}: {MAX_SUBSTITUTES} pairs in a row could not be decoded (last: {found.where})")
        gen = pair_generator(self.seed, slot, stream=TRANSFORM_STREAM)
        won, lost = transform_pair(winner, loser, self.resolution, self.center_crop, self.random_flip, gen)
        return {
            "slot": slot,
            "prompt": pair.prompt,
            "preference": pair.preference if self.soft_labels else 1.0,
            "winner_pixels": won.pixels,
            "loser_pixels": lost.pixels,
            "original_size": (won.original_size, lost.original_size),
            "crop_top_left": (won.crop_top_left, lost.crop_top_left),
        }


def _decode(found: Candidate) -> tuple[PreferencePair, Any, Any] | Reject:
    pair = found.pair
    if isinstance(pair, Reject):
        return pair
    try:
        winner = open_image(pair.winner, "winner")
        loser = open_image(pair.loser, "loser")
    except ValueError as err:
        return Reject("corrupt image", detail=str(err))
    return pair, winner, loser


class PairStream(SlotDataset):
    """In memory: slot ``s`` is ``pairs[perm_e[s % N]]``, one seeded permutation per epoch."""

    def __init__(
        self,
        pairs: Sequence[PreferencePair],
        resolution: int,
        seed: int,
        center_crop: bool = True,
        random_flip: bool = False,
        shuffle: bool = True,
        strict: bool = False,
        soft_labels: bool = False,
    ) -> None:
        if len(pairs) == 0:
            raise DataError("the dataset has no usable pairs (after dropping ties and bad rows)")
        super().__init__(resolution, seed, center_crop, random_flip, strict, soft_labels)
        self.pairs = pairs
        self.shuffle = shuffle
        self.pair_index = EpochOrder(seed, len(pairs), shuffle)

    def __len__(self) -> int:
        return len(self.pairs)

    def candidate(self, slot: int, attempt: int) -> Candidate:
        pair = self.pairs[self.pair_index(slot + attempt)]
        return Candidate(pair.row_id, f"{pair.source} row {pair.row_id}", pair)


class StreamingPairStream(SlotDataset):
    """Streaming (``streaming.py``): one window of pairs in memory; substitutes come from the
    same window."""

    def __init__(self, source: DataSource, config: DataConfig, seed: int, shuffle: bool = True) -> None:
        super().__init__(
            config.resolution, seed, config.center_crop, config.random_flip, config.strict, config.soft_labels
        )
        self.report = ReadReport()
        chunks, columns = build_index(source, config, self.report)
        log.info(
            "data %s (%s, streaming, windows of >= %d pairs): %s",
            config.path,
            source.format,
            config.shuffle_buffer,
            self.report.summary(),
        )
        if not chunks:
            raise DataError(f"{config.path}: no usable pairs ({self.report.summary()})")
        self.windows = WindowedPairs(chunks, columns, source, seed, config.shuffle_buffer, shuffle)

    def __len__(self) -> int:
        return self.windows.total

    def candidate(self, slot: int, attempt: int) -> Candidate:
        return self.windows.candidate(slot, attempt)


def collate_pairs(items: list[dict[str, Any]]) -> PairBatch:
    """Stack ``P`` decoded pairs into a :class:`PairBatch` (prompts and pixels)."""
    return PairBatch(
        slots=[item["slot"] for item in items],
        labels=torch.tensor([float(item["preference"]) for item in items]),
        original_size=torch.tensor(
            [item["original_size"][0] for item in items] + [item["original_size"][1] for item in items]
        ),
        crop_top_left=torch.tensor(
            [item["crop_top_left"][0] for item in items] + [item["crop_top_left"][1] for item in items]
        ),
        prompts=[item["prompt"] for item in items],
        winner_pixels=torch.stack([item["winner_pixels"] for item in items]),
        loser_pixels=torch.stack([item["loser_pixels"] for item in items]),
    )


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


def load_pairs(config: DataConfig, source: DataSource | None = None) -> list[PreferencePair]:
    """Every usable pair named by ``config``, in memory, winner first (at most ``max_pairs``)."""
    source = source or resolve(config)
    report = ReadReport()
    pairs = []
    for pair in iter_source(source, config, report):
        pairs.append(pair)
        if config.max_pairs is not None and len(pairs) >= config.max_pairs:
            report.stopped_at_max_pairs = True
            break
    log.info("data %s (%s): %s", config.path, source.format, report.summary())
    if not pairs:
        raise DataError(f"{config.path}: no usable pairs ({report.summary()})")
    return pairs


def use_streaming(config: DataConfig, source: DataSource) -> bool:
    """``data.streaming``, with ``auto`` decided by the files' total size; JSONL never streams."""
    if source.layout != "columnar":
        if config.streaming is True:
            log.info("data.streaming: %s data is read into memory (it holds image paths, not bytes)", source.format)
        return False
    if config.streaming == "auto":
        return total_bytes(source.files) > config.stream_above_mb * 2**20
    return bool(config.streaming)


def build_pair_stream(config: DataConfig, seed: int) -> SlotDataset:
    """The slot-indexed training dataset for ``config`` (the trainer's one entry point to data)."""
    if config.shuffle_buffer < 1:
        raise ConfigError(f"config key 'data.shuffle_buffer' must be >= 1 (got {config.shuffle_buffer})")
    source = resolve(config)
    if use_streaming(config, source):
        return StreamingPairStream(source, config, seed)
    return PairStream(
        load_pairs(config, source),
        config.resolution,
        seed,
        config.center_crop,
        config.random_flip,
        strict=config.strict,
        soft_labels=config.soft_labels,
    )


__all__ = [
    "EpochOrder",
    "PairStream",
    "SlotBatchSampler",
    "SlotDataset",
    "StreamingPairStream",
    "build_pair_stream",
    "collate_pairs",
    "epoch_permutation",
    "load_pairs",
]
