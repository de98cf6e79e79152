"""Scoring split across the processes of an ``accelerate launch`` (or torchrun): each process
takes every n-th item, and the main process gathers the results through small JSON files in the
output folder (a few numbers per item, so no collective needs a device of its own)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def my_share(items: list[Any], state: Any) -> list[tuple[int, Any]]:
    """``(index, item)`` for the items process ``state.process_index`` of ``state.num_processes``
    handles (every n-th from its rank); all of them when ``state`` is None."""
    indexed = list(enumerate(items))
    return indexed if state is None else indexed[state.process_index :: state.num_processes]


def gather_rows(out: Path, name: str, mine: list[Any], state: Any) -> list[Any]:
    """Every process's JSON-able ``mine`` concatenated in process order, on the main process;
    [] on the others. All processes wait until the main one has read and removed the files."""
    out.mkdir(parents=True, exist_ok=True)
    (out / f".{name}_{state.process_index}.json").write_text(json.dumps(mine))
    state.wait_for_everyone()
    rows: list[Any] = []
    if state.is_main_process:
        for index in range(state.num_processes):
            path = out / f".{name}_{index}.json"
            rows += json.loads(path.read_text())
            path.unlink()
    state.wait_for_everyone()
    return rows
