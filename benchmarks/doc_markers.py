"""The benchmarks' one way to put a generated table into a docs page: between two HTML comments."""

from __future__ import annotations

from pathlib import Path


def write_between(path: Path, begin: str, end: str, body: str, page: str, section: str) -> None:
    """Replace what lies between ``begin`` and ``end`` in ``path`` by ``body``. A missing page
    starts as ``# page``; missing markers are added at its end under ``## section``."""
    text = path.read_text() if path.is_file() else f"# {page}\n"
    if begin not in text or end not in text:
        text = text.rstrip() + f"\n\n## {section}\n\n{begin}\n{end}\n"
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    path.write_text(f"{head}{begin}\n{body}\n{end}{tail}")
