"""Pick-a-Pic v1/v2: caption, jpg_0, jpg_1, label_0 (and the rest of the v2 columns).

``label_0 == 1`` means image 0 won, ``0`` that image 1 won, ``0.5`` a tie. Rows with
``has_label = false`` or ``are_different = false`` are dropped, and so are ties unless
``data.drop_ties=false`` (a kept tie puts image 0 first). The winner comes first. prefdiff's
optional ``preference_0`` column (the probability that image 0 is preferred: the label app's vote
fraction, ``label-ai --temperature``'s Bradley-Terry probability) becomes the pair's
``preference``, the soft label that ``data.soft_labels=true`` trains on.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prefdiff.data.columnar import columnar_files
from prefdiff.data.formats import DATA_FORMATS, DataFormat, DataSource
from prefdiff.data.report import ReadReport, Reject
from prefdiff.data.rows import iter_columnar, label_reject, prompt_reject, winner_preference
from prefdiff.data.schema import PreferencePair, image_source

if TYPE_CHECKING:
    from prefdiff.config import DataConfig

REQUIRED_COLUMNS = ("caption", "jpg_0", "jpg_1", "label_0")
FILTER_COLUMNS = ("label_1", "has_label", "are_different")
SOFT_LABEL_COLUMN = "preference_0"
# v2 columns kept in provenance; per-image ones are renamed winner_*/loser_*
PER_IMAGE = {"model": ("model_0", "model_1"), "uid": ("image_0_uid", "image_1_uid")}
PER_ROW = ("best_image_uid", "user_id", "ranking_id", "created_at", "num_example_per_prompt")

__all__ = ["REQUIRED_COLUMNS", "PickapicSpec", "ReadReport", "read_pickapic"]


class PickapicSpec:
    """Row semantics of Pick-a-Pic (see the module docstring)."""

    source = "pickapic"

    def __init__(self, drop_ties: bool = True) -> None:
        self.drop_ties = drop_ties

    def required(self) -> tuple[str, ...]:
        return REQUIRED_COLUMNS

    def scan_columns(self, available: Collection[str]) -> list[str]:
        return ["caption", "label_0", *(c for c in FILTER_COLUMNS if c in available)]

    def read_columns(self, available: Collection[str]) -> list[str]:
        optional = [*FILTER_COLUMNS, *(c for pair in PER_IMAGE.values() for c in pair), *PER_ROW]
        optional.append(SOFT_LABEL_COLUMN)
        return [*REQUIRED_COLUMNS, *(c for c in optional if c in available)]

    def screen(self, row: dict[str, Any]) -> Reject | None:
        if row.get("has_label") is False:
            return Reject("has_label is false", bad=False)
        if row.get("are_different") is False:
            return Reject("are_different is false", bad=False)
        label_0 = row.get("label_0")
        rejection = label_reject(label_0, "label_0", self.drop_ties)
        if rejection is not None and rejection.bad:
            return rejection
        label_1 = row.get("label_1")
        if label_1 is not None and label_0 is not None and label_1 != 1 - label_0:
            return Reject("label_1 is not 1 - label_0")
        return prompt_reject(row.get("caption")) or rejection

    def to_pair(self, row: dict[str, Any], row_id: str, base_dir: Path) -> PreferencePair | Reject:
        first, second = (image_source(row.get(c), base_dir) for c in ("jpg_0", "jpg_1"))
        if first is None or second is None:
            return Reject("image missing", detail="jpg_0" if first is None else "jpg_1")
        images = (first, second)
        label_0 = float(row["label_0"])
        order = (0, 1) if label_0 >= 0.5 else (1, 0)
        preference = winner_preference(label_0, row.get(SOFT_LABEL_COLUMN), winner_is_0=order[0] == 0)
        if isinstance(preference, Reject):
            return preference
        provenance: dict[str, Any] = {}
        for name, columns in PER_IMAGE.items():
            if columns[0] in row:
                provenance[f"winner_{name}"] = row[columns[order[0]]]
                provenance[f"loser_{name}"] = row[columns[order[1]]]
        for column in PER_ROW:
            if column in row:
                value = row[column]
                provenance[column] = value if value is None or isinstance(value, int | float | str) else str(value)
        return PreferencePair(
            prompt=row["caption"],
            winner=images[order[0]],
            loser=images[order[1]],
            source=self.source,
            row_id=row_id,
            raw_labels=(label_0, 1.0 - label_0),
            provenance=provenance,
            preference=preference,
        )


def read_pickapic(
    path: str | Path, drop_ties: bool = True, report: ReadReport | None = None
) -> Iterator[PreferencePair]:
    """Yield pairs from a Pick-a-Pic parquet file, directory of shards or saved datasets
    directory, winner first; bad rows are skipped and counted in ``report``."""
    report = report if report is not None else ReadReport()
    yield from iter_columnar(columnar_files(path), PickapicSpec(drop_ties), report, strict=False, check="header")


def _resolve_pickapic(config: DataConfig, path: Path) -> DataSource:
    return DataSource("pickapic", "columnar", columnar_files(path, config.split), PickapicSpec(config.drop_ties))


# the fallback of data.format=auto: any path no other format claims
DATA_FORMATS.register("pickapic")(DataFormat(detect=lambda config, path: True, resolve=_resolve_pickapic, priority=99))
