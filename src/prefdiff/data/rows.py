"""Rows to pairs: the pass shared by every format.

A *row spec* says what a format's rows mean (which columns, which rows to drop, which image won);
this module walks columnar files chunk by chunk, or JSONL files line by line, and turns rows into
:class:`PreferencePair` s, counting what it drops in a :class:`ReadReport`.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterator
from pathlib import Path
from typing import Any, Protocol

from prefdiff.data.columnar import Chunk, column_names, file_chunks, read_chunks
from prefdiff.data.report import ReadReport, Reject
from prefdiff.data.schema import ImageCheck, PreferencePair, check_image
from prefdiff.errors import DataError
from prefdiff.jsonl import json_lines

LABELS = (0, 0.5, 1)


class RowSpec(Protocol):
    """What a format's rows mean."""

    source: str

    def required(self) -> tuple[str, ...]:
        """Columns (keys) every row must have."""
        ...

    def read_columns(self, available: Collection[str]) -> list[str]:
        """Columns to read to build pairs, given the file's columns."""
        ...

    def scan_columns(self, available: Collection[str]) -> list[str]:
        """The cheap columns that :meth:`screen` needs (no images)."""
        ...

    def screen(self, row: dict[str, Any]) -> Reject | None:
        """Decide from labels and prompt alone whether the row is dropped."""
        ...

    def to_pair(self, row: dict[str, Any], row_id: str, base_dir: Path) -> PreferencePair | Reject:
        """The pair, winner first, for a row that passed :meth:`screen`."""
        ...


def label_reject(label: Any, name: str, drop_ties: bool) -> Reject | None:
    """Pick-a-Pic label semantics: ``1`` image 0 won, ``0`` image 1 won, ``0.5`` a tie."""
    if isinstance(label, bool) or not isinstance(label, int | float) or label not in LABELS:
        return Reject(f"{name} outside {{0, 0.5, 1}}")
    if label == 0.5 and drop_ties:
        return Reject("tie", bad=False)
    return None


def label_preference(label_0: float) -> float:
    """The winner's preference a hard label implies: 0.5 for a kept tie, else 1.0."""
    return 0.5 if label_0 == 0.5 else 1.0


def winner_preference(label_0: float, preference_0: Any, winner_is_0: bool) -> float | Reject:
    """The probability that the pair's winner is preferred: ``preference_0`` (the probability
    that image 0 is) seen from the winner's side when the row carries it, else 1.0 for a decided
    label and 0.5 for a tie. A ``preference_0`` outside [0, 1], or on the other side of 0.5 from
    ``label_0``, is refused."""
    if preference_0 is None:
        return label_preference(label_0)
    if isinstance(preference_0, bool) or not isinstance(preference_0, int | float) or not 0.0 <= preference_0 <= 1.0:
        return Reject("preference_0 outside [0, 1]", detail=repr(preference_0))
    if (label_0 == 1 and preference_0 < 0.5) or (label_0 == 0 and preference_0 > 0.5):
        return Reject("preference_0 disagrees with label_0", detail=f"label_0 {label_0}, preference_0 {preference_0}")
    return float(preference_0) if winner_is_0 else 1.0 - float(preference_0)


def prompt_reject(prompt: Any) -> Reject | None:
    """Why ``prompt`` is not a caption: missing or blank, or not text at all (bytes, a number),
    with what was found."""
    if prompt is None or isinstance(prompt, str) and not prompt.strip():
        return Reject("empty caption")
    if not isinstance(prompt, str):
        return Reject("caption is not text", detail=f"{type(prompt).__name__}: {prompt!r:.60}")
    return None


def check_pair_images(pair: PreferencePair, mode: ImageCheck) -> Reject | None:
    """Both images of ``pair`` are readable (see :func:`check_image`), or why not."""
    for role, source in (("winner", pair.winner), ("loser", pair.loser)):
        if isinstance(source, Path) and not source.is_file():
            return Reject("image file not found", detail=f"{role}: {source}")
        try:
            check_image(source, role, mode)
        except ValueError as err:
            return Reject("corrupt image", detail=str(err))
    return None


def row_to_pair(
    spec: RowSpec, row: dict[str, Any], row_id: str, base_dir: Path, check: ImageCheck
) -> PreferencePair | Reject:
    """Screen, build and check one row."""
    rejection = spec.screen(row)
    if rejection is not None:
        return rejection
    pair = spec.to_pair(row, row_id, base_dir)
    if isinstance(pair, Reject):
        return pair
    return check_pair_images(pair, check) or pair


def open_columnar(file: Path, spec: RowSpec, report: ReadReport, strict: bool) -> tuple[list[str], list[Chunk]] | None:
    """The file's columns and chunks; ``None`` (all rows counted as dropped) when it lacks a
    required column, or :class:`DataError` naming the file under ``strict``."""
    try:
        names = column_names(file)
        chunks = file_chunks(file)
    except DataError as err:
        if strict:
            raise
        report.reject(Reject("unreadable file", detail=str(err)), f"{file.name}:*", str(file), strict)
        return None
    missing = [c for c in spec.required() if c not in names]
    if missing:
        message = f"missing required column(s) {', '.join(missing)}"
        if strict:
            raise DataError(f"{file}: {message} (has: {', '.join(sorted(names))})")
        report.drop(message, f"{file.name}:*", count=sum(c.num_rows for c in chunks))
        return None
    return names, chunks


def readable_chunk(chunk: Chunk, rows: list[dict] | DataError, report: ReadReport, strict: bool) -> list[dict] | None:
    """``rows`` when they are rows; a read error is raised (strict) or counted for every row of
    the chunk, and None returned (not strict)."""
    if not isinstance(rows, DataError):
        return rows
    if strict:
        raise rows
    report.drop(
        "unreadable row group",
        f"{chunk.file.name}:{chunk.first_row}-{chunk.first_row + chunk.num_rows - 1}",
        count=chunk.num_rows,
    )
    return None


def iter_columnar(
    files: list[Path], spec: RowSpec, report: ReadReport, strict: bool, check: ImageCheck
) -> Iterator[PreferencePair]:
    """Pairs from parquet/Arrow files, one chunk (row group) in memory at a time."""
    for file in files:
        opened = open_columnar(file, spec, report, strict)
        if opened is None:
            continue
        names, chunks = opened
        for chunk, read in read_chunks(file, chunks, spec.read_columns(names)):
            rows = readable_chunk(chunk, read, report, strict)
            if rows is None:
                continue
            for offset, row in enumerate(rows):
                number = chunk.first_row + offset
                row_id = f"{file.name}:{number}"
                pair = row_to_pair(spec, row, row_id, file.parent, check)
                if isinstance(pair, Reject):
                    report.reject(pair, row_id, f"{file}, row {number}", strict)
                    continue
                pair.provenance.setdefault("file", str(file))
                report.kept += 1
                yield pair


def jsonl_rows(file: Path) -> Iterator[tuple[int, dict[str, Any] | Reject]]:
    """``(line number, row)`` for each non-blank line; a Reject where the line is not an object."""
    for number, row in json_lines(file):
        if isinstance(row, json.JSONDecodeError):
            yield number, Reject("invalid JSON line", detail=str(row))
        else:
            yield number, row if isinstance(row, dict) else Reject("JSON line is not an object")


def iter_jsonl(
    files: list[Path], spec: RowSpec, report: ReadReport, strict: bool, check: ImageCheck
) -> Iterator[PreferencePair]:
    """Pairs from JSONL files; image paths are relative to the file's folder."""
    for file in files:
        for number, row in jsonl_rows(file):
            row_id = f"{file.name}:{number}"
            where = f"{file}, line {number}"
            if not isinstance(row, Reject):
                missing = [key for key in spec.required() if key not in row]
                pair = (
                    Reject(f"missing key {missing[0]}")
                    if missing
                    else row_to_pair(spec, row, row_id, file.parent, check)
                )
            else:
                pair = row
            if isinstance(pair, Reject):
                report.reject(pair, row_id, where, strict)
                continue
            pair.provenance.setdefault("file", str(file))
            report.kept += 1
            yield pair
