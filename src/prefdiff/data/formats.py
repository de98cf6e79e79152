"""The data-format seam: each preference-data format registers how to recognise a path and how
to resolve it into a :class:`DataSource` (files in storage order plus a row spec).

``data.format=auto`` tries the registered formats' ``detect`` in ascending ``priority``; the
first that claims the path reads it. A format is one file that registers itself here with
``DATA_FORMATS.register(name)(DataFormat(...))`` (see docs/data.md, "How to add a data format").
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from prefdiff.registry import Registry

if TYPE_CHECKING:
    from prefdiff.config import DataConfig
    from prefdiff.data.rows import RowSpec

JSONL_SUFFIXES = (".jsonl", ".json")


@dataclass
class DataSource:
    """A resolved ``data`` section: the format, the files in storage order and their row spec.
    ``layout`` is ``columnar`` (parquet/Arrow, chunked: streamable) or ``jsonl``."""

    format: str
    layout: Literal["columnar", "jsonl"]
    files: list[Path]
    spec: RowSpec


@dataclass(frozen=True)
class DataFormat:
    """``detect(config, path)``: whether ``data.format=auto`` should read ``path`` as this format;
    ``resolve(config, path)``: the :class:`DataSource`, with errors naming the key or path."""

    detect: Callable[[DataConfig, Path], bool]
    resolve: Callable[[DataConfig, Path], DataSource]
    priority: int = 50


DATA_FORMATS: Registry[DataFormat] = Registry("data format", package="prefdiff.data")


def detect_format(config: DataConfig) -> str:
    """``data.format``, or the first registered format (by priority) that claims ``data.path``."""
    if config.format != "auto":
        return config.format
    path = Path(config.path)
    for name, fmt in sorted(DATA_FORMATS.items(), key=lambda item: item[1].priority):
        if fmt.detect(config, path):
            return name
    raise AssertionError("the pickapic format claims every path")  # pragma: no cover
