"""Oracles of the toy world: ``(image, caption) -> float``, higher is better.

Each built-in oracle adds two parts, both read from the image by :func:`~prefdiff.toy.world.perceive`:

- **faithfulness** in [0, 1]: half for the caption's colour, half for its shape (a part the
  caption does not name counts as met);
- **taste** in [0, 1]: something no caption states (:data:`TASTES` lists them, each with the
  attribute it reads). ``large_central`` (the default) likes big shapes near the centre.

The built-in tastes are split once into a tuning half (:data:`TUNING_TASTES`), on which the
quickstart's defaults may be chosen, and a held-out half (:data:`HELDOUT_TASTES`), on which they
are only measured (docs/tastes.md). The split was fixed before any of the new tastes was trained
on: one taste of each related pair on each side (size, background, object colour against
placement, outline against texture).

Any function with the same signature can stand in (``toy.oracle=module:function``); its scale
does not matter, since the raters are calibrated to it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

from PIL import Image

from prefdiff.errors import ConfigError
from prefdiff.toy.world import (
    BACKGROUND_LEVELS,
    MAX_RADIUS,
    MIN_RADIUS,
    Perception,
    parse_caption,
    perceive,
)

Oracle = Callable[[Image.Image, str], float]


def faithfulness(seen: Perception, caption: str) -> float:
    """0.5 for the caption's colour plus 0.5 for its shape; 0 when no shape is found."""
    if not seen.found:
        return 0.0
    colour, shape = parse_caption(caption)
    return 0.5 * (colour is None or seen.colour == colour) + 0.5 * (shape is None or seen.shape == shape)


def _unit(value: float, low: float, high: float) -> float:
    return min(1.0, max(0.0, (value - low) / (high - low)))


def size_score(seen: Perception) -> float:
    """0 at the world's smallest radius, 1 at its largest."""
    return _unit(seen.radius, MIN_RADIUS, MAX_RADIUS)


def centrality_score(seen: Perception) -> float:
    """1 at the centre, 0 at the farthest a shape's centre can be (a corner, 0.33 from it on each axis)."""
    distance = math.hypot(seen.cx - 0.5, seen.cy - 0.5)
    return 1.0 - _unit(distance, 0.0, (0.5 - MIN_RADIUS - 0.03) * math.sqrt(2))


def darkness_score(seen: Perception) -> float:
    """1 for the darkest background the world draws, 0 for the lightest."""
    return 1.0 - _unit(seen.background_level, *BACKGROUND_LEVELS)


def high_placement_score(seen: Perception) -> float:
    """1 for a shape as high as the world draws one (its centre 0.17 from the top), 0 as low."""
    return 1.0 - _unit(seen.cy, MIN_RADIUS + 0.03, 1.0 - MIN_RADIUS - 0.03)


def warmth_score(seen: Perception) -> float:
    """1 for the warmest background tint the world draws (red 0.12 above blue), 0 for the coolest."""
    return _unit(seen.background_warmth, -0.12, 0.12)


def vividness_score(seen: Perception) -> float:
    """The object's HSV saturation: 0 at 0.4 or below, 1 at full saturation."""
    return _unit(seen.object_saturation, 0.4, 1.0)


def crispness_score(seen: Perception) -> float:
    """1 for an edge 0.6 px wide or less (the renderer's is about 0.7), 0 for 2 px or more."""
    return 1.0 - _unit(seen.edge_width, 0.6, 2.0)


def cleanliness_score(seen: Perception) -> float:
    """1 for a flat background, 0 when its pixels stray 0.05 (of the colour cube's side) from its median."""
    return 1.0 - _unit(seen.background_noise, 0.0, 0.05)


def _with_taste(image: Image.Image, caption: str, taste: Callable[[Perception], float]) -> float:
    seen = perceive(image)
    if not seen.found:
        return 0.0
    return faithfulness(seen, caption) + taste(seen)


def large_central(image: Image.Image, caption: str) -> float:
    """Faithfulness plus a liking for large shapes near the centre (the default taste)."""
    seen = perceive(image)
    if not seen.found:
        return 0.0
    return faithfulness(seen, caption) + 0.5 * size_score(seen) + 0.5 * centrality_score(seen)


def dark_background(image: Image.Image, caption: str) -> float:
    """Faithfulness plus a liking for dark backgrounds."""
    seen = perceive(image)
    if not seen.found:
        return 0.0
    return faithfulness(seen, caption) + darkness_score(seen)


def small_objects(image: Image.Image, caption: str) -> float:
    """Faithfulness plus a liking for small shapes."""
    seen = perceive(image)
    if not seen.found:
        return 0.0
    return faithfulness(seen, caption) + 1.0 - size_score(seen)


def high_placement(image: Image.Image, caption: str) -> float:
    """Faithfulness plus a liking for shapes high in the frame (placement)."""
    return _with_taste(image, caption, high_placement_score)


def warm_background(image: Image.Image, caption: str) -> float:
    """Faithfulness plus a liking for warm-tinted backgrounds (hue, not brightness)."""
    return _with_taste(image, caption, warmth_score)


def vivid_colour(image: Image.Image, caption: str) -> float:
    """Faithfulness plus a liking for a saturated object colour."""
    return _with_taste(image, caption, vividness_score)


def crisp_edges(image: Image.Image, caption: str) -> float:
    """Faithfulness plus a liking for sharp outlines (against soft, blurred ones)."""
    return _with_taste(image, caption, crispness_score)


def clean_background(image: Image.Image, caption: str) -> float:
    """Faithfulness plus a liking for flat, noise-free backgrounds (texture)."""
    return _with_taste(image, caption, cleanliness_score)


TASTES: dict[str, tuple[Oracle, str]] = {
    "large_central": (large_central, "size and placement: large shapes near the centre"),
    "dark_background": (dark_background, "background brightness: dark"),
    "vivid_colour": (vivid_colour, "object colour: saturated"),
    "crisp_edges": (crisp_edges, "outline: sharp edges"),
    "small_objects": (small_objects, "size: small shapes"),
    "warm_background": (warm_background, "background hue: a warm tint"),
    "high_placement": (high_placement, "placement: high in the frame"),
    "clean_background": (clean_background, "texture: a flat, noise-free background"),
}
"""Every built-in taste: its oracle and the attribute it reads."""
TUNING_TASTES: tuple[str, ...] = ("large_central", "dark_background", "vivid_colour", "crisp_edges")
HELDOUT_TASTES: tuple[str, ...] = ("small_objects", "warm_background", "high_placement", "clean_background")
BUILTIN: dict[str, Oracle] = {name: oracle for name, (oracle, _) in TASTES.items()}


def oracle_spec(name: str) -> str:
    """The scorer spec (``python:module:function``) for a built-in name or a ``module:function``."""
    if name in BUILTIN:
        return f"python:{__name__}:{name}"
    target = name.removeprefix("python:")
    if ":" not in target:
        raise ConfigError(
            f"config key 'toy.oracle': {name!r} is not a built-in oracle ({', '.join(BUILTIN)}) "
            "nor module:function / path/to/file.py:function"
        )
    return f"python:{target}"


def oracle_fingerprint(spec: str) -> str:
    """A digest of the source behind an oracle spec (its module or file, and the world's
    perception), so that editing the oracle redoes the votes instead of reusing stale ones."""
    import hashlib
    import importlib.util

    from prefdiff.toy import world

    module_name = spec.removeprefix("python:").rpartition(":")[0]
    digest = hashlib.sha256(Path(world.__file__).read_bytes())
    source: Path | None
    if module_name.endswith(".py"):
        source = Path(module_name)
    else:
        found = importlib.util.find_spec(module_name)
        source = Path(found.origin) if found is not None and found.origin else None
    if source is not None and source.is_file():
        digest.update(source.read_bytes())
    return digest.hexdigest()[:16]
