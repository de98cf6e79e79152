"""The reader entry point: ``iter_pairs(config, report)`` for every registered data format
(``data/formats.py``).

Formats (``data.format``; ``auto`` detects from the path), each registered in its own file:

- ``pickapic``: Pick-a-Pic v1/v2 parquet (a file or a directory of shards) or a saved
  ``datasets`` directory (Arrow files from ``save_to_disk``; read with pyarrow alone);
- ``pairs_jsonl``: a pair folder, ``pairs.jsonl`` of ``{"prompt", "chosen", "rejected"}`` image
  paths relative to the file;
- ``mapped``: any parquet, Arrow or JSONL file with the columns named in ``data.columns``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

from prefdiff.config import DataConfig
from prefdiff.data.formats import DATA_FORMATS, DataSource, detect_format
from prefdiff.data.report import ReadReport
from prefdiff.data.rows import iter_columnar, iter_jsonl
from prefdiff.data.schema import PreferencePair
from prefdiff.errors import DataError

log = logging.getLogger("prefdiff.data")


def resolve(config: DataConfig) -> DataSource:
    """The :class:`DataSource` for ``config``; errors name the key or path that is wrong."""
    if not config.path:
        raise DataError(
            "config key 'data.path' is empty: give a Pick-a-Pic parquet file or directory, a saved datasets "
            "directory, a pair folder (pairs.jsonl) or a file with data.columns set"
        )
    name = detect_format(config)
    return DATA_FORMATS.get(name, key="data.format").resolve(config, Path(config.path))


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


__all__ = ["DataSource", "detect_format", "iter_pairs", "iter_source", "resolve"]
