"""The one writer of Pick-a-Pic-format parquet, for AI feedback, the toy and the label app's export.

Pick-a-Pic conventions: ``label_0 == 1`` means image 0 won, ``0`` that image 1 won, ``0.5`` a tie
(prefdiff's reader drops ties by default); ``label_1 = 1 - label_0``; prefdiff's optional
``preference_0`` is the probability that image 0 is preferred (a vote fraction, or a reward
model's Bradley-Terry probability), read with ``data.soft_labels=true``; ``best_image_uid`` is the
winner's uid, empty for a tie. ``jpg_0`` / ``jpg_1`` hold the image files' bytes as they are (PNG
bytes stay PNG: readers decode them with PIL whatever the column name).

Each caller chooses which columns it writes (a subset of ``COLUMN_TYPES``, in its order) and how
many rows go in one row group (the unit the streaming reader reads and shuffles). pyarrow is
imported only when writing, so the label app can import this module cheaply; no torch.
"""

from __future__ import annotations

import hashlib
import itertools
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PICKAPIC_COLUMNS = (
    "caption", "jpg_0", "jpg_1", "label_0", "label_1", "image_0_uid", "image_1_uid",
    "best_image_uid", "ranking_id", "user_id", "has_label", "are_different", "created_at",
    "num_example_per_prompt", "model_0", "model_1", "image_0_url", "image_1_url",
)  # fmt: skip
"""Pick-a-Pic v2's columns, in its order."""

COLUMN_TYPES: dict[str, str] = {
    "caption": "string", "jpg_0": "binary", "jpg_1": "binary", "label_0": "float64",
    "label_1": "float64", "image_0_uid": "string", "image_1_uid": "string",
    "best_image_uid": "string", "ranking_id": "int64", "user_id": "int64", "has_label": "bool",
    "are_different": "bool", "created_at": "timestamp[us, UTC]", "num_example_per_prompt": "int64",
    "model_0": "string", "model_1": "string", "image_0_url": "string", "image_1_url": "string",
    # prefdiff's own: the AI rater's scores, the label app's vote counts and study context
    "score_0": "float64", "score_1": "float64", "votes_0": "int64", "votes_1": "int64",
    "votes_tie": "int64", "study": "string", "question": "string", "category": "string",
    "preference_0": "float64",
}  # fmt: skip
"""Every column a prefdiff writer may write, with its Arrow type."""


def image_uid(data: bytes) -> str:
    """A stable id of an image's content (UUID-formatted, from its SHA-256)."""
    return str(uuid.UUID(bytes=hashlib.sha256(data).digest()[:16]))


@dataclass(frozen=True)
class PickapicRow:
    """One preference pair as a Pick-a-Pic row.

    ``label_0`` is 1.0 (image 0 won), 0.0 (image 1 won) or 0.5 (tie). ``extra`` holds the other
    columns of ``COLUMN_TYPES`` a caller fills (``score_0``, ``user_id``, ``votes_0`` ...).
    ``preference_0`` is the probability that image 0 is preferred (None: not known); it is
    written when the caller's columns include ``preference_0``.
    """

    caption: str
    jpg_0: bytes
    jpg_1: bytes
    label_0: float
    ranking_id: int
    image_0_uid: str | None = None
    image_1_uid: str | None = None
    model_0: str | None = None
    model_1: str | None = None
    are_different: bool = True
    extra: Mapping[str, Any] = field(default_factory=dict)
    preference_0: float | None = None

    @property
    def best_image_uid(self) -> str | None:
        """The winner's uid; empty for a tie."""
        if self.label_0 == 1.0:
            return self.image_0_uid
        if self.label_0 == 0.0:
            return self.image_1_uid
        return ""

    def as_columns(self) -> dict[str, Any]:
        """Every column's value for this row (the writer keeps the ones it was asked for)."""
        return {
            "caption": self.caption, "jpg_0": self.jpg_0, "jpg_1": self.jpg_1,
            "label_0": float(self.label_0), "label_1": 1.0 - float(self.label_0),
            "image_0_uid": self.image_0_uid, "image_1_uid": self.image_1_uid,
            "best_image_uid": self.best_image_uid, "ranking_id": self.ranking_id,
            "has_label": True, "are_different": self.are_different,
            "model_0": self.model_0, "model_1": self.model_1, "preference_0": self.preference_0,
            **self.extra,
        }  # fmt: skip


def arrow_schema(columns: Sequence[str]) -> Any:
    """The ``pyarrow.Schema`` of ``columns`` (names from ``COLUMN_TYPES``), in that order."""
    import pyarrow as pa

    unknown = [name for name in columns if name not in COLUMN_TYPES]
    if unknown:
        raise ValueError(f"not Pick-a-Pic columns: {unknown}; known: {sorted(COLUMN_TYPES)}")
    types = {
        "string": pa.string(), "binary": pa.binary(), "float64": pa.float64(), "int64": pa.int64(),
        "bool": pa.bool_(), "timestamp[us, UTC]": pa.timestamp("us", tz="UTC"),
    }  # fmt: skip
    return pa.schema([(name, types[COLUMN_TYPES[name]]) for name in columns])


def write_pickapic_parquet(
    path: Path,
    rows: Iterable[PickapicRow],
    columns: Sequence[str] = PICKAPIC_COLUMNS,
    rows_per_group: int | None = None,
) -> int:
    """Write ``rows`` to ``path`` with ``columns``; return the number of rows.

    ``rows`` is consumed ``rows_per_group`` at a time (all at once when None), each group one
    parquet row group, so a lazy iterable keeps only one group's images in memory. A file with
    no rows still has the schema.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = arrow_schema(columns)
    path.parent.mkdir(parents=True, exist_ok=True)
    written = 0
    with pq.ParquetWriter(path, schema) as writer:
        for group in _groups(rows, rows_per_group):
            writer.write_table(pa.Table.from_pylist([row.as_columns() for row in group], schema=schema))
            written += len(group)
    return written


def _groups(rows: Iterable[PickapicRow], size: int | None) -> Iterator[list[PickapicRow]]:
    """Lists of ``size`` rows (the last shorter; all rows when None); always at least one list."""
    remaining = iter(rows)
    group = list(itertools.islice(remaining, size))
    yield group
    while group := list(itertools.islice(remaining, size)):
        yield group
