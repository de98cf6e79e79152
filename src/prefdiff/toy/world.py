"""The toy world: one flat shape of a named colour on a plain background.

A scene has six attributes. Captions name two of them (colour and shape: ``"a red circle"``);
size, position and background are never stated, so a taste for them can only be learned from
preferences. Scenes are rendered with numpy at 4x supersampling (anti-aliased edges) and
perceived back by :func:`perceive`, which the oracle uses to read a generated image.

Geometry, in pixels of an ``S x S`` image: the shape has centre ``(cx, cy)`` and "radius" ``r``.
A circle has radius ``r``; a square has half-side ``r``; a triangle points up, apex at
``cy - r`` and base ``2r`` wide at ``cy + r``. Areas: ``pi r^2``, ``4 r^2`` and ``2 r^2``.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import numpy as np
from PIL import Image

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (215, 35, 35),
    "green": (30, 165, 55),
    "blue": (35, 75, 220),
    "yellow": (235, 205, 30),
    "purple": (140, 50, 185),
    "orange": (245, 130, 20),
    "cyan": (25, 195, 210),
    "pink": (240, 95, 185),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle")

# Colour-shape combinations kept out of the preference-training captions. The base model saw
# them in pretraining; a preference learned on the others must carry over to them.
HELD_OUT: tuple[tuple[str, str], ...] = (
    ("red", "triangle"),
    ("green", "circle"),
    ("blue", "square"),
    ("yellow", "triangle"),
    ("purple", "circle"),
    ("cyan", "square"),
)

IMAGE_SIZE = 32
MIN_RADIUS, MAX_RADIUS = 0.14, 0.36  # fractions of the image side
BACKGROUND_LEVELS = (0.12, 0.88)  # darkest and lightest background brightness (0..1)


@dataclass(frozen=True)
class Scene:
    """What one image shows. ``radius``, ``cx``, ``cy`` are fractions of the image side;
    ``background`` is an RGB triple in 0..255."""

    colour: str
    shape: str
    radius: float
    cx: float
    cy: float
    background: tuple[int, int, int]

    @property
    def caption(self) -> str:
        return caption_for(self.colour, self.shape)


def caption_for(colour: str, shape: str) -> str:
    return f"a {colour} {shape}"


def parse_caption(caption: str) -> tuple[str | None, str | None]:
    """The colour and shape a caption names (None where it names none)."""
    words = caption.lower().replace(",", " ").split()
    colour = next((w for w in words if w in COLOURS), None)
    shape = next((w for w in words if w in SHAPES), None)
    return colour, shape


def training_combos() -> list[tuple[str, str]]:
    """Colour-shape combinations used for preference-training captions."""
    return [(c, s) for c in COLOURS for s in SHAPES if (c, s) not in HELD_OUT]


def sample_scene(rng: random.Random, colour: str | None = None, shape: str | None = None) -> Scene:
    """A scene with the given colour and shape (random where None) and random unstated
    attributes: size uniform in [MIN_RADIUS, MAX_RADIUS], the shape fully inside the image,
    a low-saturation background of uniform brightness."""
    colour = colour or rng.choice(list(COLOURS))
    shape = shape or rng.choice(SHAPES)
    radius = rng.uniform(MIN_RADIUS, MAX_RADIUS)
    margin = radius + 0.03
    cx, cy = rng.uniform(margin, 1 - margin), rng.uniform(margin, 1 - margin)
    level = rng.uniform(*BACKGROUND_LEVELS)
    tint = [rng.uniform(-0.06, 0.06) for _ in range(3)]
    background = tuple(int(round(255 * min(1.0, max(0.0, level + t)))) for t in tint)
    return Scene(colour, shape, radius, cx, cy, background)  # type: ignore[arg-type]


def shape_mask(shape: str, cx: float, cy: float, r: float, size: int, supersample: int = 1) -> np.ndarray:
    """Coverage ``[size, size]`` in 0..1 of ``shape`` (centre and radius in pixels)."""
    n = size * supersample
    coords = (np.arange(n) + 0.5) / supersample
    y, x = np.meshgrid(coords, coords, indexing="ij")
    dx, dy = x - cx, y - cy
    if shape == "circle":
        inside = dx * dx + dy * dy <= r * r
    elif shape == "square":
        inside = (np.abs(dx) <= r) & (np.abs(dy) <= r)
    elif shape == "triangle":
        inside = (dy >= -r) & (dy <= r) & (np.abs(dx) <= (dy + r) / 2)
    else:
        raise ValueError(f"unknown shape {shape!r}: expected one of {', '.join(SHAPES)}")
    coverage = inside.astype(np.float32)
    if supersample > 1:
        coverage = coverage.reshape(size, supersample, size, supersample).mean(axis=(1, 3))
    return coverage


def render(scene: Scene, size: int = IMAGE_SIZE) -> Image.Image:
    """The scene as a ``size`` px RGB image with anti-aliased edges."""
    coverage = shape_mask(scene.shape, scene.cx * size, scene.cy * size, scene.radius * size, size, supersample=4)[
        ..., None
    ]
    background = np.asarray(scene.background, dtype=np.float32)
    fill = np.asarray(COLOURS[scene.colour], dtype=np.float32)
    pixels = background * (1 - coverage) + fill * coverage
    return Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8), "RGB")


@dataclass(frozen=True)
class Perception:
    """What :func:`perceive` reads from an image. ``radius``, ``cx``, ``cy`` are fractions of
    the side, ``background_level`` is brightness 0..1, ``shape_fit`` the best template's IoU.

    The rest describe how the scene is drawn, beyond what it shows: ``background_rgb`` and
    ``object_rgb`` (0..1 per channel; the object's is the mean of its core), ``background_noise``
    (the mean colour distance of the background's pixels from its median: 0 for a flat one),
    and ``edge_width`` (pixels: the partly covered pixels per unit of outline, about 1 for the
    renderer's anti-aliased edge, more for a blurred one)."""

    colour: str | None
    shape: str | None
    radius: float
    cx: float
    cy: float
    background_level: float
    shape_fit: float
    found: bool
    background_rgb: tuple[float, float, float] = (0.5, 0.5, 0.5)
    object_rgb: tuple[float, float, float] = (0.5, 0.5, 0.5)
    background_noise: float = 0.0
    edge_width: float = 0.0

    @property
    def object_saturation(self) -> float:
        """HSV saturation of the object's colour, 0..1."""
        high, low = max(self.object_rgb), min(self.object_rgb)
        return 0.0 if high <= 0 else (high - low) / high

    @property
    def contrast(self) -> float:
        """Absolute difference in luma (Rec. 601) between object and background, 0..1."""
        return abs(_luma(self.object_rgb) - _luma(self.background_rgb))

    @property
    def background_warmth(self) -> float:
        """Red minus blue of the background, -1..1: above 0 a warm tint, below a cool one."""
        return self.background_rgb[0] - self.background_rgb[2]


def _luma(rgb: tuple[float, float, float]) -> float:
    return 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]


MIN_SHAPE_FIT = 0.5  # IoU below which no shape is recognised
_RADIUS_FROM_AREA = {"circle": 1 / math.sqrt(math.pi), "square": 0.5, "triangle": 1 / math.sqrt(2)}


def perceive(image: Image.Image) -> Perception:
    """Read colour, shape, size, position and background from an image.

    The background is the median of the 2-pixel border; the object is every pixel that differs
    from it (soft, by colour distance). Its colour is the nearest palette colour to its core
    pixels; its shape is the template (circle, square, triangle of the same area and centroid)
    with the highest IoU against the object mask, or None when even that IoU is below
    ``MIN_SHAPE_FIT``. The edge width projects each pixel onto the line from the background to
    the object's colour (its coverage, for a renderer that mixes the two) and counts the pixels
    between 15% and 85% covered, per ``4 sqrt(area)`` of outline. (A shape that covers most of
    the border is misread: its colour becomes the background. The world never draws one, and
    the oracles give no credit for growing past the world's largest size.)
    """
    pixels = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    size = pixels.shape[0]
    border = np.concatenate(
        [
            pixels[:2].reshape(-1, 3),
            pixels[-2:].reshape(-1, 3),
            pixels[:, :2].reshape(-1, 3),
            pixels[:, -2:].reshape(-1, 3),
        ]
    )
    background = np.median(border, axis=0)
    distance = np.linalg.norm(pixels - background, axis=-1)
    mask = np.clip((distance - 0.12) / 0.2, 0.0, 1.0)
    area = float(mask.sum())
    level = float(background.mean())
    background_rgb = _triple(background)
    if area < 4.0:
        return Perception(None, None, 0.0, 0.5, 0.5, level, 0.0, False, background_rgb, background_rgb)
    ys, xs = np.mgrid[0:size, 0:size] + 0.5
    cx, cy = float((mask * xs).sum() / area), float((mask * ys).sum() / area)
    core = mask >= 0.9
    mean_colour = pixels[core].mean(axis=0) if core.sum() >= 2 else (pixels * mask[..., None]).sum(axis=(0, 1)) / area
    outside = mask <= 0.0
    noise = float(distance[outside].mean()) if outside.any() else 0.0
    span = mean_colour - background
    coverage = np.clip(((pixels - background) @ span) / max(float(span @ span), 1e-6), 0.0, 1.0)
    partial = float(((coverage > 0.15) & (coverage < 0.85)).sum())
    edge_width = partial / (4.0 * math.sqrt(max(float(coverage.sum()), 1.0)))
    object_rgb = _triple(mean_colour)
    mean_colour = mean_colour * 255.0
    names = list(COLOURS)
    palette = np.asarray([COLOURS[n] for n in names], dtype=np.float32)
    colour = names[int(np.argmin(np.linalg.norm(palette - mean_colour, axis=1)))]
    best_shape, best_fit, best_radius = None, -1.0, 0.0
    for shape in SHAPES:
        r = math.sqrt(area) * _RADIUS_FROM_AREA[shape]
        centre_y = cy - r / 3 if shape == "triangle" else cy  # a triangle's centroid sits r/3 below its centre
        template = shape_mask(shape, cx, centre_y, r, size, supersample=2)
        fit = float(np.minimum(template, mask).sum() / max(np.maximum(template, mask).sum(), 1e-6))
        if fit > best_fit:
            best_shape, best_fit, best_radius = shape, fit, r
    if best_fit < MIN_SHAPE_FIT:  # no template fits: a blob, or a shape cut off by the border
        best_shape = None
    return Perception(
        colour,
        best_shape,
        best_radius / size,
        cx / size,
        cy / size,
        level,
        best_fit,
        True,
        background_rgb,
        object_rgb,
        noise,
        edge_width,
    )


def _triple(values: np.ndarray) -> tuple[float, float, float]:
    return (float(values[0]), float(values[1]), float(values[2]))
