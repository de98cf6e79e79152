"""The one record every reader yields: a preference pair, winner first."""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from PIL import Image

ImageSource = bytes | str | Path
ImageCheck = Literal["header", "full", "none"]


@dataclass
class PreferencePair:
    """A prompt and two images of it, ``winner`` preferred over ``loser``.

    Images are kept encoded (JPEG/PNG bytes) or as file paths and decoded only when used.
    ``source`` names the reader and file, ``row_id`` the row (``file:row``, or ``file:line`` for
    JSONL), ``raw_labels`` the labels as stored (Pick-a-Pic's ``(label_0, label_1)``), and
    ``provenance`` anything else the reader knows (model names, image uids, user id, ranking id).
    ``preference`` is the probability that the winner is preferred, in [0.5, 1]: 1.0 for a hard
    label, 0.5 for a kept tie, a vote fraction or a reward model's probability where the data
    carry one (Pick-a-Pic-format ``preference_0``); training reads it with ``data.soft_labels``.
    """

    prompt: str
    winner: ImageSource
    loser: ImageSource
    source: str = ""
    row_id: str = ""
    raw_labels: tuple[float, float] | None = None
    provenance: dict[str, Any] = field(default_factory=dict)
    preference: float = 1.0


def _open(source: ImageSource) -> Image.Image:
    if isinstance(source, bytes | bytearray):
        return Image.open(io.BytesIO(source))
    return Image.open(source)


def open_image(source: ImageSource, what: str = "image") -> Image.Image:
    """Decode an image source to RGB; raises ValueError naming ``what`` when it is corrupt."""
    try:
        image = _open(source)
        image.load()
    except Exception as err:  # PIL raises many types for bad data
        raise ValueError(f"{what}: cannot decode image ({err})") from None
    return image.convert("RGB")


def check_image(source: ImageSource, what: str = "image", mode: ImageCheck = "header") -> None:
    """Raise ValueError naming ``what`` unless ``source`` looks like a readable image.

    ``header`` parses the header only (format and size; ~0.05 ms): catches garbage and missing
    files, not a truncated body. ``full`` decodes the whole image (JPEGs at 1/8 scale; a few ms):
    catches truncation too. ``none`` checks nothing.
    """
    if mode == "none":
        return
    try:
        image = _open(source)
        if mode == "full":
            if image.format == "JPEG":
                image.draft("RGB", (max(1, image.width // 8), max(1, image.height // 8)))
            image.load()
    except Exception as err:  # PIL raises many types for bad data
        raise ValueError(f"{what}: cannot decode image ({err})") from None


def image_source(value: Any, base_dir: Path | None = None) -> ImageSource | None:
    """Normalise a stored image value: encoded bytes, a ``{"bytes", "path"}`` struct (the
    Hugging Face ``Image`` feature), or a path (relative paths are taken from ``base_dir``).
    ``None`` when the value holds no image."""
    if isinstance(value, dict):
        value = value.get("bytes") or value.get("path")
    if isinstance(value, bytes | bytearray):
        return bytes(value) if value else None
    if isinstance(value, str) and value.strip():
        path = Path(value)
        return path if path.is_absolute() or base_dir is None else base_dir / path
    return None
