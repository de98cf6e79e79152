"""Pair folders: a ``pairs.jsonl`` of ``{"prompt", "chosen", "rejected"}`` beside the images.

Image paths are relative to the folder holding ``pairs.jsonl``; any other scalar keys of a line
(``model``, ``rater``, ...) are kept in the pair's provenance.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from prefdiff.data.columnar import is_saved_datasets_dir
from prefdiff.data.formats import DATA_FORMATS, JSONL_SUFFIXES, DataFormat, DataSource
from prefdiff.data.mapped import ColumnMap, MappedSpec
from prefdiff.errors import ConfigError, DataError

if TYPE_CHECKING:
    from prefdiff.config import DataConfig

PAIRS_FILE = "pairs.jsonl"


def pairs_folder_spec(drop_ties: bool = True, confine: bool = True) -> MappedSpec:
    """``{"prompt", "chosen", "rejected"}`` rows; with ``confine`` (``data.allow_outside_paths``
    false, the default) image paths that lead out of the file's folder (``..``, absolute paths,
    symlinks) are refused rows, as the label app refuses them."""
    columns = ColumnMap(prompt="prompt", chosen="chosen", rejected="rejected")
    return MappedSpec(columns, drop_ties, source="pairs_jsonl", confine=confine)


def pairs_file(path: str | Path) -> Path:
    """``path`` itself when it is a JSONL file, else ``path/pairs.jsonl``."""
    path = Path(path)
    if path.is_dir():
        path = path / PAIRS_FILE
    if not path.is_file():
        raise DataError(f"pairs file not found: {path} (a pair folder holds a {PAIRS_FILE})")
    return path


def _claims_pairs_folder(config: DataConfig, path: Path) -> bool:
    if path.is_dir():
        return (path / PAIRS_FILE).is_file() and not is_saved_datasets_dir(path)
    return path.is_file() and path.suffix in JSONL_SUFFIXES


def _resolve_pairs_folder(config: DataConfig, path: Path) -> DataSource:
    if config.columns.is_set():
        raise ConfigError(
            "data.columns is set but data.format=pairs_jsonl uses prompt/chosen/rejected; use data.format=mapped"
        )
    spec = pairs_folder_spec(config.drop_ties, confine=not config.allow_outside_paths)
    return DataSource("pairs_jsonl", "jsonl", [pairs_file(path)], spec)


DATA_FORMATS.register("pairs_jsonl")(
    DataFormat(detect=_claims_pairs_folder, resolve=_resolve_pairs_folder, priority=20)
)
