"""A small Pick-a-Pic-format parquet of drawn shapes: the preferred image shows the caption's
colour and shape; the other one a wrong colour or shape. Ties and both label orientations occur,
so the reader's tie-dropping and winner-first logic are exercised."""

from __future__ import annotations

import io
import random
from pathlib import Path

from PIL import Image, ImageDraw

from prefdiff.pickapic_parquet import PickapicRow, write_pickapic_parquet
from prefdiff.toy.world import COLOURS, SHAPES

SHAPES_COLUMNS = ("caption", "jpg_0", "jpg_1", "label_0", "label_1", "ranking_id", "has_label", "are_different")


def draw_shape(colour: str, shape: str, size: int, rng: random.Random) -> Image.Image:
    """A ``size`` px RGB image: one ``shape`` of ``colour`` on a light, slightly random background."""
    background = tuple(rng.randint(200, 245) for _ in range(3))
    image = Image.new("RGB", (size, size), background)
    draw = ImageDraw.Draw(image)
    radius = size * rng.uniform(0.22, 0.38)
    cx, cy = size / 2 + rng.uniform(-0.1, 0.1) * size, size / 2 + rng.uniform(-0.1, 0.1) * size
    box = (cx - radius, cy - radius, cx + radius, cy + radius)
    fill = COLOURS[colour]
    if shape == "circle":
        draw.ellipse(box, fill=fill)
    elif shape == "square":
        draw.rectangle(box, fill=fill)
    else:
        draw.polygon([(cx, cy - radius), (cx - radius, cy + radius), (cx + radius, cy + radius)], fill=fill)
    return image


def _jpeg(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=92)
    return buffer.getvalue()


def write_shapes_parquet(
    path: str | Path, num_rows: int = 64, size: int = 64, seed: int = 0, tie_fraction: float = 0.1
) -> Path:
    """Write ``num_rows`` Pick-a-Pic-style rows (``SHAPES_COLUMNS``) in one row group."""
    rng = random.Random(seed)
    rows = []
    for index in range(num_rows):
        colour, shape = rng.choice(list(COLOURS)), rng.choice(SHAPES)
        good = draw_shape(colour, shape, size, rng)
        if rng.random() < 0.5:
            bad = draw_shape(rng.choice([c for c in COLOURS if c != colour]), shape, size, rng)
        else:
            bad = draw_shape(colour, rng.choice([s for s in SHAPES if s != shape]), size, rng)
        tie = rng.random() < tie_fraction
        good_first = rng.random() < 0.5
        jpg_0, jpg_1 = (good, bad) if good_first else (bad, good)
        label_0 = 0.5 if tie else (1.0 if good_first else 0.0)
        rows.append(PickapicRow(f"a {colour} {shape}", _jpeg(jpg_0), _jpeg(jpg_1), label_0, ranking_id=index))
    path = Path(path)
    write_pickapic_parquet(path, rows, SHAPES_COLUMNS)
    return path
