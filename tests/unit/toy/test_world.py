"""The toy world: captions match what is drawn, and perception reads back what was drawn."""

import random

import numpy as np
import pytest
from PIL import Image

from prefdiff.toy.world import (
    COLOURS,
    HELD_OUT,
    SHAPES,
    Scene,
    parse_caption,
    perceive,
    render,
    sample_scene,
    shape_mask,
    training_combos,
)


def test_captions_name_the_drawn_colour_and_shape():
    rng = random.Random(0)
    for _ in range(200):
        scene = sample_scene(rng)
        assert parse_caption(scene.caption) == (scene.colour, scene.shape)
        seen = perceive(render(scene))
        assert (seen.colour, seen.shape) == (scene.colour, scene.shape), scene


def test_requested_attributes_are_kept_and_the_shape_stays_inside():
    rng = random.Random(1)
    for _ in range(100):
        scene = sample_scene(rng, colour="cyan", shape="triangle")
        assert (scene.colour, scene.shape) == ("cyan", "triangle")
        margin = scene.radius + 0.03
        assert margin <= scene.cx <= 1 - margin and margin <= scene.cy <= 1 - margin


def test_perception_measures_size_position_and_background():
    scene = Scene("blue", "square", radius=0.3, cx=0.4, cy=0.6, background=(30, 30, 30))
    seen = perceive(render(scene))
    assert seen.radius == pytest.approx(0.3, abs=0.02)
    assert (seen.cx, seen.cy) == (pytest.approx(0.4, abs=0.02), pytest.approx(0.6, abs=0.02))
    assert seen.background_level == pytest.approx(30 / 255, abs=0.01)


def test_an_empty_image_has_no_object():
    seen = perceive(render(Scene("red", "circle", 0.0, 0.5, 0.5, (200, 200, 200))))
    assert not seen.found and seen.colour is None


def test_template_areas_follow_the_geometry():
    """Areas of the analytic masks: pi r^2, 4 r^2 and 2 r^2 (r = 8 px on a 32 px grid)."""
    expected = {"circle": np.pi * 64, "square": 4 * 64, "triangle": 2 * 64}
    for shape in SHAPES:
        assert shape_mask(shape, 16, 16, 8, 32, supersample=4).sum() == pytest.approx(expected[shape], rel=0.03)


def test_held_out_combinations_are_not_training_captions_but_cover_every_colour_or_shape():
    train = set(training_combos())
    assert not train & set(HELD_OUT)
    assert len(train) + len(HELD_OUT) == len(COLOURS) * len(SHAPES)
    assert {s for _, s in HELD_OUT} == set(SHAPES)


def test_a_blob_that_fits_no_template_has_no_shape():
    pixels = np.full((32, 32, 3), 128, dtype=np.uint8)
    pixels[6:26, 14:18] = COLOURS["red"]  # a thin bar: IoU with every template is below 0.5
    pixels[14:18, 4:28] = COLOURS["red"]
    seen = perceive(Image.fromarray(pixels))
    assert seen.found and seen.colour == "red" and seen.shape is None and seen.shape_fit < 0.5
