"""Benchmark prompt sets: plain text, PartiPrompts TSV, HPSv2-style JSON, JSONL.

Each reader returns ``list[PromptItem]`` in file order; the index in that list is the prompt
index that, with the image index, fixes each image's seed (a paired design: two models given
the same prompt file start from the same noise).
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

from prefdiff.errors import DataError
from prefdiff.jsonl import json_lines


@dataclass(frozen=True)
class PromptItem:
    prompt: str
    category: str | None = None


def _text(path: Path) -> list[PromptItem]:
    return [PromptItem(line.strip()) for line in path.read_text().splitlines() if line.strip()]


def _parti_tsv(path: Path) -> list[PromptItem]:
    with path.open(newline="") as f:
        reader = csv.DictReader(f, delimiter="\t")
        if not reader.fieldnames or "Prompt" not in reader.fieldnames:
            raise DataError(f"{path}: a PartiPrompts TSV needs a 'Prompt' column (found: {reader.fieldnames})")
        items = []
        for row_number, row in enumerate(reader, start=2):
            prompt = (row.get("Prompt") or "").strip()
            if not prompt:
                raise DataError(f"{path}: row {row_number} has an empty Prompt")
            items.append(PromptItem(prompt, (row.get("Category") or "").strip() or None))
        return items


def _json_list(path: Path) -> list[PromptItem]:
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise DataError(f"{path}: not valid JSON ({err})") from None
    if isinstance(data, dict):  # HPSv2's benchmark files are {style: [prompts]} or a plain list
        return [PromptItem(str(p), str(style)) for style, prompts in data.items() for p in prompts]
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a JSON list of prompts (or {{category: [prompts]}})")
    items = []
    for i, entry in enumerate(data):
        if isinstance(entry, str):
            items.append(PromptItem(entry))
        elif isinstance(entry, dict) and isinstance(entry.get("prompt"), str):
            items.append(PromptItem(entry["prompt"], entry.get("category")))
        else:
            raise DataError(f"{path}: entry {i} is neither a string nor an object with a 'prompt' string")
    return items


def _jsonl(path: Path) -> list[PromptItem]:
    items = []
    for line_number, record in json_lines(path):
        if isinstance(record, json.JSONDecodeError):
            raise DataError(f"{path}: line {line_number} is not valid JSON ({record})")
        prompt = record.get("prompt") if isinstance(record, dict) else None
        if not isinstance(prompt, str) or not prompt.strip():
            raise DataError(f"{path}: line {line_number} has no 'prompt' string")
        items.append(PromptItem(prompt, record.get("category")))
    return items


READERS = {".txt": _text, ".tsv": _parti_tsv, ".json": _json_list, ".jsonl": _jsonl}


def read_prompts(path: str | Path) -> list[PromptItem]:
    """The prompts of ``path``, by extension: .txt, .tsv (PartiPrompts), .json, .jsonl."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"prompt file not found: {path}")
    reader = READERS.get(path.suffix.lower())
    if reader is None:
        raise DataError(
            f"{path}: unknown prompt-file format {path.suffix!r}; use .txt (one prompt a line), "
            ".tsv (PartiPrompts: Prompt, Category, ...), .json (a list) or .jsonl (a 'prompt' field)"
        )
    items = reader(path)
    if not items:
        raise DataError(f"{path}: no prompts")
    return items
