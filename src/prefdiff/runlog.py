"""A training run's ``metrics.jsonl``: one JSON object per logged step, ``{"step": int, ...}``.

The one reader, for `prefdiff compare`'s and the toy report's training curves and for the train
loop's resume. The loop appends one line per step, so a crash can leave the last line cut short;
such a line (anything that is not a JSON object with an integer ``step``) is skipped, never an
error. Standard library only.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

METRICS_FILE = "metrics.jsonl"


def _parse(line: str) -> dict[str, Any] | None:
    """The row a line holds, or None for a line cut short (or otherwise not a metrics row)."""
    try:
        row = json.loads(line)
    except json.JSONDecodeError:
        return None
    if not isinstance(row, dict) or isinstance(row.get("step"), bool) or not isinstance(row.get("step"), int):
        return None
    return row


def _lines(path: Path) -> list[str]:
    return [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """The rows of a ``metrics.jsonl`` in file order, each a dict with an int ``'step'``; an
    absent file has none. Lines cut short by a crash are skipped."""
    if not path.is_file():
        return []
    return [row for row in map(_parse, _lines(path)) if row is not None]


def drop_metrics_after(path: Path, step: int) -> int:
    """Rewrite ``path`` without the rows logged after ``step`` (and lines cut short), for a run
    resumed from the checkpoint at ``step``: those steps will be logged again. Kept lines stay
    as written. Returns how many lines were dropped; the file is untouched when none is."""
    if not path.is_file():
        return 0
    lines = _lines(path)
    kept = [line for line in lines if (row := _parse(line)) is not None and row["step"] <= step]
    if len(kept) != len(lines):
        path.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
    return len(lines) - len(kept)
