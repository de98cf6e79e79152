"""Streaming: a dataset larger than memory, read window by window in a seeded order.

Design (every step is a function of (seed, slot), so any process, worker or resumed run finds
the same pair for a slot without reading anything before it):

1. **Index** (once, cheap): the chunks (parquet row groups, Arrow record batches) of every file,
   and for each the number of *candidate* rows, those that pass the label/caption screen. Only
   the label and caption columns are read; no image bytes. ``N`` = candidates in all.
2. **Epoch plan**: slot ``s`` lies in epoch ``e = s // N`` at offset ``s % N``. Each epoch
   permutes the chunks (seeded by ``(seed, e)``) and groups them, in that order, into *windows*
   of at least ``data.shuffle_buffer`` candidates.
3. **Window**: the offset falls in one window; loading it reads just its chunks (all pair
   columns), and its rows are permuted by a generator seeded by ``(seed, e, window)``.
   One window is held at a time, so memory is one window, whatever the dataset's size.

Every candidate is visited exactly once per epoch. Images that turn out corrupt when decoded are
substituted, in non-strict mode, by the next pair of the same window (see ``dataset.py``).
"""

from __future__ import annotations

import bisect
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from prefdiff.config import DataConfig
from prefdiff.data.columnar import Chunk, read_chunks
from prefdiff.data.readers import DataSource
from prefdiff.data.report import ReadReport, Reject
from prefdiff.data.rows import open_columnar, readable_chunk
from prefdiff.data.schema import PreferencePair
from prefdiff.errors import DataError

log = logging.getLogger("prefdiff.data")

_PLAN_KEY, _WINDOW_KEY = 0x0C4A, 0x3D0E  # separate the seeded streams of chunk order and rows
_GONE = DataError("the row group is no longer in the file; did the data files change?")


@dataclass(frozen=True)
class IndexedChunk:
    """A chunk and how many of its rows are candidates (the first ``candidates`` that pass the
    screen; fewer than all of them only where ``data.max_pairs`` cuts the last chunk)."""

    chunk: Chunk
    candidates: int


@dataclass
class Candidate:
    """One candidate row of a loaded window: its pair, or why it has none."""

    row_id: str
    where: str
    pair: PreferencePair | Reject


def build_index(
    source: DataSource, config: DataConfig, report: ReadReport
) -> tuple[list[IndexedChunk], dict[Path, list[str]]]:
    """Scan the label/caption columns: the chunks with candidates, in storage order, and each
    file's pair columns. Screen drops are counted in ``report`` (strict: bad rows raise)."""
    spec = source.spec
    indexed: list[IndexedChunk] = []
    columns: dict[Path, list[str]] = {}
    limit = config.max_pairs
    for file in source.files:
        opened = open_columnar(file, spec, report, config.strict)
        if opened is None:
            continue
        names, chunks = opened
        columns[file] = spec.read_columns(names)
        for chunk, read in read_chunks(file, chunks, spec.scan_columns(names)):
            rows = readable_chunk(chunk, read, report, config.strict)
            if rows is None:
                continue
            count = 0
            for offset, row in enumerate(rows):
                rejection = spec.screen(row)
                if rejection is None:
                    count += 1
                else:
                    number = chunk.first_row + offset
                    report.reject(rejection, f"{file.name}:{number}", f"{file}, row {number}", config.strict)
            if limit is not None and report.kept + count >= limit:
                count = limit - report.kept
                report.stopped_at_max_pairs = True
            report.kept += count
            if count:
                indexed.append(IndexedChunk(chunk, count))
            if report.stopped_at_max_pairs:
                return indexed, columns
    return indexed, columns


@dataclass
class EpochPlan:
    """One epoch's windows: ``order`` holds chunk ids, window ``w`` is
    ``order[bounds[w]:bounds[w + 1]]`` and covers offsets ``starts[w]`` to ``starts[w + 1] - 1``."""

    order: list[int]
    bounds: list[int]
    starts: list[int]


class WindowedPairs:
    """Slot -> candidate, loading one window of chunks at a time (see the module docstring)."""

    def __init__(
        self,
        chunks: list[IndexedChunk],
        columns: dict[Path, list[str]],
        source: DataSource,
        seed: int,
        window_size: int,
        shuffle: bool = True,
    ) -> None:
        self.chunks = chunks
        self.columns = columns
        self.spec = source.spec
        self.seed = seed
        self.window_size = window_size
        self.shuffle = shuffle
        self.total = sum(c.candidates for c in chunks)
        self.windows_loaded = 0  # for tests and logs: how many window reads this object did
        self._plan: tuple[int, EpochPlan] | None = None
        self._window: tuple[int, int, list[Candidate], np.ndarray] | None = None

    def __getstate__(self) -> dict:  # DataLoader workers start without the parent's window
        return {**self.__dict__, "_plan": None, "_window": None}

    def plan(self, epoch: int) -> EpochPlan:
        if self._plan is not None and self._plan[0] == epoch:
            return self._plan[1]
        if self.shuffle:
            order = np.random.default_rng([self.seed, epoch, _PLAN_KEY]).permutation(len(self.chunks)).tolist()
        else:
            order = list(range(len(self.chunks)))
        bounds, starts, filled, total = [0], [0], 0, 0
        for position, chunk_id in enumerate(order):
            filled += self.chunks[chunk_id].candidates
            total += self.chunks[chunk_id].candidates
            if filled >= self.window_size and position + 1 < len(order):
                bounds.append(position + 1)
                starts.append(total)
                filled = 0
        bounds.append(len(order))
        starts.append(total)
        if len(starts) > 2 and starts[-1] - starts[-2] < self.window_size // 2:  # fold a short tail in
            del bounds[-2], starts[-2]
        plan = EpochPlan(order, bounds, starts)
        self._plan = (epoch, plan)
        return plan

    def locate(self, slot: int) -> tuple[int, int, int]:
        """``(epoch, window, position in the window)`` of ``slot``, from metadata alone."""
        epoch, offset = divmod(slot, self.total)
        plan = self.plan(epoch)
        window = bisect.bisect_right(plan.starts, offset) - 1
        return epoch, window, offset - plan.starts[window]

    def candidate(self, slot: int, attempt: int = 0) -> Candidate:
        """The candidate at ``slot``; ``attempt`` k > 0 gives the k-th next one in its window."""
        epoch, window, position = self.locate(slot)
        rows, perm = self._load(epoch, window)
        return rows[int(perm[(position + attempt) % len(rows)])]

    def window_of(self, slot: int) -> tuple[int, int]:
        epoch, window, _ = self.locate(slot)
        return epoch, window

    def _load(self, epoch: int, window: int) -> tuple[list[Candidate], np.ndarray]:
        if self._window is not None and self._window[:2] == (epoch, window):
            return self._window[2], self._window[3]
        self._window = None  # free the previous window before reading the next
        plan = self.plan(epoch)
        chunk_ids = plan.order[plan.bounds[window] : plan.bounds[window + 1]]
        by_file: dict[Path, list[Chunk]] = {}
        for chunk_id in chunk_ids:  # read each file once, whatever the window's chunk order
            by_file.setdefault(self.chunks[chunk_id].chunk.file, []).append(self.chunks[chunk_id].chunk)
        read: dict[Chunk, list[dict] | DataError] = {}
        for file, chunks in by_file.items():
            read.update(read_chunks(file, chunks, self.columns[file]))
        rows: list[Candidate] = []
        for chunk_id in chunk_ids:
            indexed = self.chunks[chunk_id]
            rows.extend(self._candidates(indexed, read.pop(indexed.chunk, _GONE)))
        expected = plan.starts[window + 1] - plan.starts[window]
        if len(rows) != expected:
            raise DataError(
                f"window {window} of epoch {epoch}: read {len(rows)} candidates, the index has {expected}; did the "
                "data files change?"
            )
        if self.shuffle:
            perm = np.random.default_rng([self.seed, epoch, window, _WINDOW_KEY]).permutation(len(rows))
        else:
            perm = np.arange(len(rows))
        self._window = (epoch, window, rows, perm)
        self.windows_loaded += 1
        return rows, perm

    def _candidates(self, indexed: IndexedChunk, rows: list[dict] | DataError) -> list[Candidate]:
        """The chunk's candidates (rows that pass the screen, as many as the index counted)."""
        chunk = indexed.chunk
        if isinstance(rows, DataError):  # damaged since the index was built: each candidate fails alone
            where = f"{chunk.file}, rows {chunk.first_row}-{chunk.first_row + chunk.num_rows - 1}"
            rejection = Reject("unreadable row group", detail=str(rows))
            return [Candidate(f"{chunk.file.name}:{chunk.first_row}+", where, rejection)] * indexed.candidates
        out: list[Candidate] = []
        for offset, row in enumerate(rows):
            if self.spec.screen(row) is not None:
                continue
            number = chunk.first_row + offset
            row_id = f"{chunk.file.name}:{number}"
            pair = self.spec.to_pair(row, row_id, chunk.file.parent)
            if isinstance(pair, PreferencePair):
                pair.provenance.setdefault("file", str(chunk.file))
            out.append(Candidate(row_id, f"{chunk.file}, row {number}", pair))
            if len(out) == indexed.candidates:
                break
        return out
