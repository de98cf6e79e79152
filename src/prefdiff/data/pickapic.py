"""Pick-a-Pic v1/v2 parquet: caption, jpg_0, jpg_1, label_0 (label_1); winner first, ties dropped.

``label_0 == 1`` means image 0 won, ``0`` that image 1 won, ``0.5`` a tie.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from prefdiff.data.schema import PreferencePair
from prefdiff.errors import DataError

REQUIRED_COLUMNS = ("caption", "jpg_0", "jpg_1", "label_0")


@dataclass
class ReadReport:
    """Counts of what a pass over a dataset kept and dropped, and why."""

    kept: int = 0
    dropped: Counter[str] = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)

    def drop(self, reason: str, row_id: str) -> None:
        self.dropped[reason] += 1
        self.examples.setdefault(reason, [])
        if len(self.examples[reason]) < 5:
            self.examples[reason].append(row_id)

    def summary(self) -> str:
        parts = [f"kept {self.kept}"]
        for reason, count in sorted(self.dropped.items()):
            parts.append(f"dropped {count} ({reason}; e.g. rows {', '.join(self.examples[reason])})")
        return ", ".join(parts)


def parquet_files(path: str | Path) -> list[Path]:
    """A parquet file, or the sorted ``*.parquet`` files under a directory."""
    path = Path(path)
    if path.is_file():
        return [path]
    if path.is_dir():
        files = sorted(p for p in path.rglob("*.parquet"))
        if not files:
            raise DataError(f"{path}: no .parquet files in this directory")
        return files
    raise DataError(f"data path not found: {path}")


def read_pickapic(path: str | Path, drop_ties: bool = True, report: ReadReport | None = None) -> Iterator[PreferencePair]:
    """Yield pairs from a Pick-a-Pic-style parquet file or directory of shards, winner first."""
    import pyarrow.parquet as pq

    report = report if report is not None else ReadReport()
    for file in parquet_files(path):
        parquet = pq.ParquetFile(file)
        names = set(parquet.schema_arrow.names)
        missing = [c for c in REQUIRED_COLUMNS if c not in names]
        if missing:
            raise DataError(f"{file}: missing required column(s) {', '.join(missing)} (has: {', '.join(sorted(names))})")
        columns = [c for c in (*REQUIRED_COLUMNS, "label_1", "has_label", "are_different") if c in names]
        offset = 0
        for batch in parquet.iter_batches(columns=columns, batch_size=256):
            rows = batch.to_pylist()
            for i, row in enumerate(rows):
                row_id = f"{file.name}:{offset + i}"
                pair = _row_to_pair(row, row_id, drop_ties, report)
                if pair is not None:
                    report.kept += 1
                    yield pair
            offset += len(rows)


def _row_to_pair(row: dict, row_id: str, drop_ties: bool, report: ReadReport) -> PreferencePair | None:
    if row.get("has_label") is False:
        report.drop("has_label is false", row_id)
        return None
    if row.get("are_different") is False:
        report.drop("are_different is false", row_id)
        return None
    label_0 = row["label_0"]
    if label_0 not in (0, 0.5, 1):
        report.drop("label_0 outside {0, 0.5, 1}", row_id)
        return None
    caption = row["caption"]
    if not isinstance(caption, str):
        report.drop("caption missing", row_id)
        return None
    if label_0 == 0.5:
        if drop_ties:
            report.drop("tie", row_id)
            return None
    image_0, image_1 = row["jpg_0"], row["jpg_1"]
    if not image_0 or not image_1:
        report.drop("image bytes missing", row_id)
        return None
    winner, loser = (image_0, image_1) if label_0 >= 0.5 else (image_1, image_0)
    label_1 = row.get("label_1", 1 - label_0)
    return PreferencePair(
        prompt=caption,
        winner=winner,
        loser=loser,
        source="pickapic",
        row_id=row_id,
        raw_labels=(float(label_0), float(label_1) if label_1 is not None else 1 - float(label_0)),
    )
