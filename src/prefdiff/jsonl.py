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
    or the ``JSONDecodeError`` of a line that is not JSON (each caller words its own error)."""
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                yield number, json.loads(line)
            except json.JSONDecodeError as err:
                yield number, err
