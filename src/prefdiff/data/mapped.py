"""Any parquet, Arrow or JSONL file whose columns are named in ``data.columns``.

Two mappings: *pair style* (``prompt``, ``chosen``, ``rejected``: the chosen image won) and
*label style* (``prompt``, ``image_0``, ``image_1``, ``label_0`` with Pick-a-Pic's meaning:
``1`` image 0 won, ``0`` image 1 won, ``0.5`` a tie). Image values are encoded bytes, a
``{"bytes", "path"}`` struct, or a path relative to the data file's folder.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prefdiff.data.formats import DATA_FORMATS, JSONL_SUFFIXES, DataFormat, DataSource
from prefdiff.data.report import Reject
from prefdiff.data.rows import label_preference, label_reject, prompt_reject
from prefdiff.data.schema import PreferencePair, image_source
from prefdiff.errors import ConfigError

if TYPE_CHECKING:
    from prefdiff.config import DataConfig


@dataclass(frozen=True)
class ColumnMap:
    """Column names; pair style sets chosen/rejected, label style image_0/image_1/label_0."""

    prompt: str
    chosen: str = ""
    rejected: str = ""
    image_0: str = ""
    image_1: str = ""
    label_0: str = ""

    @property
    def pair_style(self) -> bool:
        return bool(self.chosen)

    def validate(self) -> ColumnMap:
        """Raise ConfigError naming the ``data.columns.*`` keys that are missing or mixed."""
        pair = [k for k in ("chosen", "rejected") if getattr(self, k)]
        label = [k for k in ("image_0", "image_1", "label_0") if getattr(self, k)]
        if not self.prompt:
            raise ConfigError("config key 'data.columns.prompt' is empty: name the column that holds the prompt")
        if pair and label:
            raise ConfigError("data.columns: set either chosen/rejected or image_0/image_1/label_0, not both")
        if not pair and not label:
            raise ConfigError(
                "data.columns: name the images, either data.columns.chosen and data.columns.rejected, or "
                "data.columns.image_0, data.columns.image_1 and data.columns.label_0"
            )
        needed = ("chosen", "rejected") if pair else ("image_0", "image_1", "label_0")
        for key in needed:
            if not getattr(self, key):
                raise ConfigError(
                    f"config key 'data.columns.{key}' is empty (needed with data.columns.{(pair or label)[0]})"
                )
        return self


class MappedSpec:
    """Row semantics given a :class:`ColumnMap`; scalar extra fields go to provenance."""

    def __init__(
        self, columns: ColumnMap, drop_ties: bool = True, source: str = "mapped", confine: bool = False
    ) -> None:
        self.columns = columns.validate()
        self.drop_ties = drop_ties
        self.source = source
        self.confine = confine  # image paths must stay inside the data file's folder

    def required(self) -> tuple[str, ...]:
        c = self.columns
        return (c.prompt, c.chosen, c.rejected) if c.pair_style else (c.prompt, c.image_0, c.image_1, c.label_0)

    def scan_columns(self, available: Collection[str]) -> list[str]:
        c = self.columns
        return [c.prompt] if c.pair_style else [c.prompt, c.label_0]

    def read_columns(self, available: Collection[str]) -> list[str]:
        return list(self.required())

    def screen(self, row: dict[str, Any]) -> Reject | None:
        c = self.columns
        rejection = None if c.pair_style else label_reject(row.get(c.label_0), c.label_0, self.drop_ties)
        if rejection is not None and rejection.bad:
            return rejection
        return prompt_reject(row.get(c.prompt)) or rejection

    def to_pair(self, row: dict[str, Any], row_id: str, base_dir: Path) -> PreferencePair | Reject:
        c = self.columns
        if c.pair_style:
            names, labels = (c.chosen, c.rejected), (1.0, 0.0)
        else:
            label_0 = float(row[c.label_0])
            names = (c.image_0, c.image_1) if label_0 >= 0.5 else (c.image_1, c.image_0)
            labels = (label_0, 1.0 - label_0)
        winner, loser = (image_source(row.get(name), base_dir) for name in names)
        if winner is None or loser is None:
            return Reject("image missing", detail=names[0] if winner is None else names[1])
        if self.confine:
            for name, source in zip(names, (winner, loser), strict=True):
                if isinstance(source, Path) and not source.resolve().is_relative_to(base_dir.resolve()):
                    return Reject("image path outside the folder", detail=f"{name}: {row.get(name)}")
        mapped = set(self.required())
        provenance = {
            k: v for k, v in row.items() if k not in mapped and (v is None or isinstance(v, int | float | str))
        }
        preference = label_preference(labels[0])
        return PreferencePair(row[c.prompt], winner, loser, self.source, row_id, labels, provenance, preference)


def _column_map(config: DataConfig) -> ColumnMap:
    c = config.columns
    return ColumnMap(c.prompt, c.chosen, c.rejected, c.image_0, c.image_1, c.label_0)


def _resolve_mapped(config: DataConfig, path: Path) -> DataSource:
    """A JSONL file, a folder of JSONL files (and no columnar ones), or parquet/Arrow files."""
    from prefdiff.data.columnar import COLUMNAR_SUFFIXES, columnar_files

    spec = MappedSpec(_column_map(config), config.drop_ties)
    if path.is_file() and path.suffix in JSONL_SUFFIXES:
        return DataSource("mapped", "jsonl", [path], spec)
    if path.is_dir() and not any(path.rglob(f"*{s}") for s in COLUMNAR_SUFFIXES):
        jsonl = sorted(p for s in JSONL_SUFFIXES for p in path.glob(f"*{s}"))
        if jsonl:
            return DataSource("mapped", "jsonl", jsonl, spec)
    return DataSource("mapped", "columnar", columnar_files(path, config.split), spec)


DATA_FORMATS.register("mapped")(
    DataFormat(detect=lambda config, path: config.columns.is_set(), resolve=_resolve_mapped, priority=10)
)
