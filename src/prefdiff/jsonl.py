"""JSON-lines reading shared by the data readers, prompt files and the label app.

Standard library only, so the label app can use it without importing torch or pyarrow.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def json_lines(path: Path) -> Iterator[tuple[int, Any | json.JSONDecodeError]]:
    """``(line number, value)`` for each non-blank line of a UTF-8 file: the parsed JSON value,
    or the ``JSONDecodeError`` of a line that is not JSON, or not UTF-8 (each caller words its
    own error; one bad line never stops the others from being read)."""
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                line = raw.decode("utf-8-sig" if number == 1 else "utf-8")  # a leading BOM is not data
            except UnicodeDecodeError as err:
                yield number, json.JSONDecodeError(f"not UTF-8 (byte {err.start}: {err.reason})", "", 0)
                continue
            if not line.strip():
                continue
            try:
                yield number, json.loads(line)
            except json.JSONDecodeError as err:
                yield number, err
