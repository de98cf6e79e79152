"""Pair folders: a ``pairs.jsonl`` of ``{"prompt", "chosen", "rejected"}`` beside the images.

Image paths are relative to the folder holding ``pairs.jsonl``; any other scalar keys of a line
(``model``, ``rater``, ...) are kept in the pair's provenance.
"""

from __future__ import annotations

from pathlib import Path

from prefdiff.data.mapped import ColumnMap, MappedSpec
from prefdiff.errors import DataError

PAIRS_FILE = "pairs.jsonl"


def pairs_folder_spec(drop_ties: bool = True) -> MappedSpec:
    return MappedSpec(ColumnMap(prompt="prompt", chosen="chosen", rejected="rejected"), drop_ties, source="pairs_jsonl")


def pairs_file(path: str | Path) -> Path:
    """``path`` itself when it is a JSONL file, else ``path/pairs.jsonl``."""
    path = Path(path)
    if path.is_dir():
        path = path / PAIRS_FILE
    if not path.is_file():
        raise DataError(f"pairs file not found: {path} (a pair folder holds a {PAIRS_FILE})")
    return path
