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


TRANSPARENT_BACKGROUND = (255, 255, 255)
"""Images with transparency (RGBA, LA, P with a transparent colour) are composited onto white."""


def to_rgb(image: Image.Image, what: str = "image") -> Image.Image:
    """``image`` as 8-bit RGB. High bit depth (16-bit greyscale ``I;16*``, 32-bit ``I`` holding
    16-bit values) is scaled to 8 bits, not clipped (PIL's ``convert`` saturates it to white);
    transparency is composited onto :data:`TRANSPARENT_BACKGROUND`. Float (``F``) images and
    32-bit values past 16 bits have no agreed range and are refused (ValueError naming ``what``)."""
    import numpy as np

    mode = image.mode
    if mode.startswith("I;16") or mode == "I":
        values = np.asarray(image, dtype=np.float64)
        if mode == "I" and (values.min() < 0 or values.max() > 65535):
            raise ValueError(f"{what}: 32-bit image with values outside 0-65535: no known range (mode I)")
        grey = np.clip(np.rint(values / 257.0), 0, 255).astype(np.uint8)
        return Image.fromarray(grey, "L").convert("RGB")
    if mode == "F":
        raise ValueError(f"{what}: floating-point image (mode F) has no known range; save it as 8 or 16 bits")
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (*TRANSPARENT_BACKGROUND, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def open_image(source: ImageSource, what: str = "image") -> Image.Image:
    """Decode an image source to 8-bit RGB (:func:`to_rgb`); raises ValueError naming ``what``
    when it is corrupt or of a mode with no known range."""
    try:
        image = _open(source)
        image.load()
    except Exception as err:  # PIL raises many types for bad data
        raise ValueError(f"{what}: cannot decode image ({err})") from None
    return to_rgb(image, what)


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
