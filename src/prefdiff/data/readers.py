"""The reader entry point: ``iter_pairs(config, report)`` for every data format.

Formats (``data.format``; ``auto`` detects from the path):

- ``pickapic``: Pick-a-Pic v1/v2 parquet (a file or a directory of shards) or a saved
  ``datasets`` directory (Arrow files from ``save_to_disk``; read with pyarrow alone);
- ``pairs_jsonl``: a pair folder, ``pairs.jsonl`` of ``{"prompt", "chosen", "rejected"}`` image
  paths relative to the file;
- ``mapped``: any parquet, Arrow or JSONL file with the columns named in ``data.columns``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from prefdiff.config import DataConfig
from prefdiff.data.columnar import COLUMNAR_SUFFIXES, columnar_files, is_saved_datasets_dir
from prefdiff.data.mapped import ColumnMap, MappedSpec
from prefdiff.data.pairs_folder import PAIRS_FILE, pairs_file, pairs_folder_spec
from prefdiff.data.pickapic import PickapicSpec
from prefdiff.data.report import ReadReport
from prefdiff.data.rows import RowSpec, iter_columnar, iter_jsonl
from prefdiff.data.schema import PreferencePair
from prefdiff.errors import ConfigError, DataError

log = logging.getLogger("prefdiff.data")

JSONL_SUFFIXES = (".jsonl", ".json")


@dataclass
class DataSource:
    """A resolved ``data`` section: the format, the files in storage order and their row spec.
    ``layout`` is ``columnar`` (parquet/Arrow, chunked: streamable) or ``jsonl``."""

    format: str
    layout: Literal["columnar", "jsonl"]
    files: list[Path]
    spec: RowSpec


def detect_format(config: DataConfig) -> str:
    """``data.format``, or the format that ``data.path`` looks like when it is ``auto``."""
    if config.format != "auto":
        return config.format
    path = Path(config.path)
    if config.columns.is_set():
        return "mapped"
    if path.is_dir() and (path / PAIRS_FILE).is_file() and not is_saved_datasets_dir(path):
        return "pairs_jsonl"
    if path.is_file() and path.suffix in JSONL_SUFFIXES:
        return "pairs_jsonl"
    return "pickapic"


def _column_map(config: DataConfig) -> ColumnMap:
    c = config.columns
    return ColumnMap(c.prompt, c.chosen, c.rejected, c.image_0, c.image_1, c.label_0)


def resolve(config: DataConfig) -> DataSource:
    """The :class:`DataSource` for ``config``; errors name the key or path that is wrong."""
    if not config.path:
        raise DataError(
            "config key 'data.path' is empty: give a Pick-a-Pic parquet file or directory, a saved datasets "
            "directory, a pair folder (pairs.jsonl) or a file with data.columns set"
        )
    fmt = detect_format(config)
    path = Path(config.path)
    if fmt == "pairs_jsonl":
        if config.columns.is_set():
            raise ConfigError("data.columns is set but data.format=pairs_jsonl uses prompt/chosen/rejected; use data.format=mapped")
        return DataSource(fmt, "jsonl", [pairs_file(path)], pairs_folder_spec(config.drop_ties))
    if fmt == "pickapic":
        return DataSource(fmt, "columnar", columnar_files(path, config.split), PickapicSpec(config.drop_ties))
    spec = MappedSpec(_column_map(config), config.drop_ties)
    if path.is_file() and path.suffix in JSONL_SUFFIXES:
        return DataSource(fmt, "jsonl", [path], spec)
    if path.is_dir() and not any(path.rglob(f"*{s}") for s in COLUMNAR_SUFFIXES):
        jsonl = sorted(p for s in JSONL_SUFFIXES for p in path.glob(f"*{s}"))
        if jsonl:
            return DataSource(fmt, "jsonl", jsonl, spec)
    return DataSource(fmt, "columnar", columnar_files(path, config.split), spec)


def iter_source(source: DataSource, config: DataConfig, report: ReadReport) -> Iterator[PreferencePair]:
    """Every usable pair of ``source`` in storage order, winner first (no ``max_pairs``)."""
    walk = iter_columnar if source.layout == "columnar" else iter_jsonl
    yield from walk(source.files, source.spec, report, config.strict, config.check_images)


def iter_pairs(config: DataConfig, report: ReadReport) -> Iterator[PreferencePair]:
    """Every usable pair named by ``config``, in a deterministic storage order, winner first.

    Rows dropped (ties, ``has_label = false``, bad input) are counted in ``report``; with
    ``data.strict`` bad input raises :class:`DataError` naming the file and row. Stops after
    ``data.max_pairs`` pairs. A full pass logs ``report.summary()``.
    """
    source = resolve(config)
    for pair in iter_source(source, config, report):
        yield pair
        if config.max_pairs is not None and report.kept >= config.max_pairs:
            report.stopped_at_max_pairs = True
            break
    log.info("data %s (%s): %s", config.path, source.format, report.summary())
