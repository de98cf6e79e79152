"""The one digest of a model directory's weight files, for the encoding cache's fingerprint and
the toy quickstart's stage keys.

For each matching file (in sorted order): its path relative to the directory, its size, and
SHA-256 of its first and last MiB. It changes when the weights do without reading gigabytes
(a change confined to the middle of a file larger than 2 MiB that keeps its size goes unseen;
fine-tuned weights change everywhere). The cache stores this digest in its info files, so the
definition must not change without invalidating every cache. Standard library only.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".json", ".txt")
"""Weights, configs and tokenizer files."""
_MIB = 2**20


def _file_parts(file: Path, name: str) -> Iterator[bytes]:
    """What the digest reads of one file: ``name:size``, the first MiB, the last MiB."""
    size = file.stat().st_size
    yield f"{name}:{size}".encode()
    with file.open("rb") as handle:
        yield handle.read(_MIB)
        if size > 2 * _MIB:
            handle.seek(-_MIB, os.SEEK_END)
            yield handle.read()


def weights_digest(directory: Path, pattern: str = "*") -> str:
    """16 hex characters over the files of ``directory`` matching ``pattern`` (``"*"``: the
    directory's own files, ``"*/*"``: those of its component folders) whose suffix is in
    ``WEIGHT_SUFFIXES``."""
    digest = hashlib.sha256()
    for file in sorted(directory.glob(pattern)):
        if file.suffix in WEIGHT_SUFFIXES and file.is_file():
            for part in _file_parts(file, file.relative_to(directory).as_posix()):
                digest.update(part)
    return digest.hexdigest()[:16]
