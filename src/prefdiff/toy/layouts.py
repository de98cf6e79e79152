"""Colour layouts of the toy world, for generation by SDEdit (``prefdiff toy layouts``) and the
quickstart's "from colour layouts" section.

A layout is what a user might sketch before asking for a picture: a soft blob of the caption's
colour on a plain field, at a random place and size. The image-to-image pipeline noises it to
``strength`` and denoises it under the caption, so the coarse composition comes from the
layout and the detail (the shape's outline, its edges, the exact background) from the model.
Comparing the DPO model with its base from the same layouts and seeds asks whether the learned
taste survives when the composition is given.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from prefdiff.toy.world import BACKGROUND_LEVELS, COLOURS, HELD_OUT, IMAGE_SIZE, MAX_RADIUS, MIN_RADIUS, caption_for

LAYOUTS_FILE = "layouts.jsonl"


def draw_layout(rng: random.Random, colour: str, size: int = IMAGE_SIZE) -> tuple[Image.Image, dict[str, float]]:
    """A ``size`` px layout: a grey field of uniform brightness and a blob of ``colour`` whose
    radius (a fraction of the side) is uniform over the world's object sizes, fully inside the
    image, its edge a smoothstep from 0.6 to 1.2 radii. Returns the image and what was drawn."""
    radius = rng.uniform(MIN_RADIUS, MAX_RADIUS)
    margin = radius + 0.03
    cx, cy = rng.uniform(margin, 1 - margin), rng.uniform(margin, 1 - margin)
    level = rng.uniform(*BACKGROUND_LEVELS)
    coords = (np.arange(size) + 0.5) / size
    y, x = np.meshgrid(coords, coords, indexing="ij")
    distance = np.hypot(x - cx, y - cy) / radius
    edge = np.clip((distance - 0.6) / 0.6, 0.0, 1.0)
    alpha = (1.0 - edge * edge * (3.0 - 2.0 * edge))[..., None]  # 1 inside 0.6 r, 0 beyond 1.2 r
    field = np.full(3, 255.0 * level, dtype=np.float64)
    pixels = field * (1 - alpha) + np.asarray(COLOURS[colour], dtype=np.float64) * alpha
    image = Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8), "RGB")
    return image, {"radius": radius, "cx": cx, "cy": cy, "background_level": level}


def write_layouts(
    out: Path,
    per_caption: int,
    seed: int = 0,
    captions: tuple[tuple[str, str], ...] = HELD_OUT,
    size: int = IMAGE_SIZE,
) -> Path:
    """``per_caption`` layouts for each (colour, shape) of ``captions`` as ``out/images/*.png`` and
    ``out/layouts.jsonl`` (``{"prompt", "image", "category", "layout"}``, the format
    ``prefdiff generate --init-images`` reads, a prompt set in itself); returns the JSONL path."""
    if per_caption < 1:
        raise ValueError(f"per_caption must be >= 1 (got {per_caption})")
    (out / "images").mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    for c, (colour, shape) in enumerate(captions):
        caption = caption_for(colour, shape)
        for k in range(per_caption):
            rng = random.Random(f"layout:{seed}:{c}:{k}")  # one stream per layout: adding more keeps these
            image, drawn = draw_layout(rng, colour, size)
            name = f"images/c{c:02d}_{k:04d}.png"
            image.save(out / name)
            rows.append({"prompt": caption, "image": name, "category": caption, "layout": drawn})
    path = out / LAYOUTS_FILE
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path
