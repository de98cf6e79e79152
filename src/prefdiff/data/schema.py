"""The one record every reader yields: a preference pair, winner first."""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

ImageSource = bytes | str | Path


@dataclass
class PreferencePair:
    """A prompt and two images of it, ``winner`` preferred over ``loser``.

    Images are kept encoded (JPEG/PNG bytes) or as file paths and decoded only when used.
    ``provenance`` records where the pair came from: ``source`` (reader and file), ``row_id``,
    the raw labels, and anything else the reader knows (model names, user id, ...).
    """

    prompt: str
    winner: ImageSource
    loser: ImageSource
    source: str = ""
    row_id: str = ""
    raw_labels: tuple[float, float] | None = None
    provenance: dict[str, Any] = field(default_factory=dict)


def open_image(source: ImageSource, what: str = "image") -> Image.Image:
    """Decode an image source to RGB; raises ValueError naming ``what`` when it is corrupt."""
    try:
        if isinstance(source, bytes | bytearray):
            image = Image.open(io.BytesIO(source))
        else:
            image = Image.open(source)
        image.load()
    except Exception as err:  # PIL raises many types for bad data
        raise ValueError(f"{what}: cannot decode image ({err})") from None
    return image.convert("RGB")
