"""Oracles: faithfulness first, then each one's unstated taste."""

import numpy as np
import pytest
from PIL import Image, ImageEnhance, ImageFilter

from prefdiff.errors import ConfigError
from prefdiff.evaluate.scorers import load_mixed
from prefdiff.toy.oracle import (
    BUILTIN,
    HELDOUT_TASTES,
    TASTES,
    TUNING_TASTES,
    clean_background,
    crisp_edges,
    dark_background,
    faithfulness,
    high_placement,
    large_central,
    oracle_fingerprint,
    oracle_spec,
    small_objects,
    vivid_colour,
    warm_background,
)
from prefdiff.toy.world import Scene, perceive, render

GREY = (128, 128, 128)


def image(colour="red", shape="circle", radius=0.25, cx=0.5, cy=0.5, background=GREY):
    return render(Scene(colour, shape, radius, cx, cy, background))


def test_faithfulness_counts_colour_and_shape_halves():
    assert faithfulness(perceive(image()), "a red circle") == 1.0
    assert faithfulness(perceive(image(colour="blue")), "a red circle") == 0.5
    assert faithfulness(perceive(image(shape="square")), "a red circle") == 0.5
    assert faithfulness(perceive(image(colour="blue", shape="square")), "a red circle") == 0.0
    assert faithfulness(perceive(image(colour="blue")), "a circle") == 1.0  # colour not named


@pytest.mark.parametrize("oracle", list(BUILTIN.values()), ids=list(BUILTIN))
def test_every_oracle_prefers_the_faithful_image(oracle):
    assert oracle(image(), "a red circle") > oracle(image(colour="green"), "a red circle")
    assert oracle(image(), "a red circle") > oracle(image(shape="triangle"), "a red circle")


def test_tastes_differ_on_what_no_caption_states():
    big_central, small_corner = image(radius=0.34), image(radius=0.15, cx=0.2, cy=0.2)
    assert large_central(big_central, "a red circle") > large_central(small_corner, "a red circle")
    assert small_objects(small_corner, "a red circle") > small_objects(big_central, "a red circle")
    dark, light = image(background=(35, 35, 40)), image(background=(220, 220, 215))
    assert dark_background(dark, "a red circle") > dark_background(light, "a red circle")
    assert large_central(dark, "a red circle") == pytest.approx(large_central(light, "a red circle"), abs=0.02)


def test_oracles_load_as_python_scorers_by_name_or_module_path():
    assert oracle_spec("dark_background") == "python:prefdiff.toy.oracle:dark_background"
    assert oracle_spec("mypkg.mod:fn") == "python:mypkg.mod:fn"
    scorer = load_mixed(oracle_spec("large_central"))
    assert scorer.score([image(), image(colour="green")], ["a red circle"] * 2)[0] > 1.5


def test_a_file_oracle_loads_and_editing_it_changes_its_fingerprint(tmp_path):
    folder = tmp_path / "a:b"  # a colon in the path: the function name is after the last one
    folder.mkdir()
    source = folder / "taste.py"
    source.write_text("def score(image, caption):\n    return 1.0\n")
    spec = oracle_spec(f"{source}:score")
    assert load_mixed(spec).score([image()], ["a red circle"]) == [1.0]
    before = oracle_fingerprint(spec)
    source.write_text("def score(image, caption):\n    return 2.0\n")
    assert oracle_fingerprint(spec) != before
    assert oracle_fingerprint(oracle_spec("large_central")) != before


def test_a_misspelt_oracle_name_lists_the_built_in_ones():
    with pytest.raises(ConfigError, match=", ".join(TASTES)):
        oracle_spec("large-central")


def _noisy(picture: Image.Image, amount: float, seed: int = 0) -> Image.Image:
    pixels = np.asarray(picture, dtype=np.float32)
    noise = np.random.default_rng(seed).normal(0.0, amount * 255, pixels.shape)
    return Image.fromarray(np.clip(pixels + noise, 0, 255).astype(np.uint8))


# each new taste: (oracle, the image it should prefer, the one it should not); both faithful
PREFERENCES = {
    "high_placement": (high_placement, image(cy=0.25), image(cy=0.75)),
    "warm_background": (warm_background, image(background=(150, 128, 108)), image(background=(108, 128, 150))),
    "vivid_colour": (vivid_colour, image(), ImageEnhance.Color(image()).enhance(0.55)),
    "crisp_edges": (crisp_edges, image(), image().filter(ImageFilter.GaussianBlur(1.0))),
    "clean_background": (clean_background, image(), _noisy(image(), 0.03)),
}


@pytest.mark.parametrize("name", list(PREFERENCES))
def test_each_new_taste_ranks_its_attribute_and_only_it(name):
    oracle, liked, disliked = PREFERENCES[name]
    assert faithfulness(perceive(liked), "a red circle") == faithfulness(perceive(disliked), "a red circle") == 1.0
    assert oracle(liked, "a red circle") > oracle(disliked, "a red circle") + 0.2
    # the shipped tastes that read other attributes barely tell the two apart
    others = [BUILTIN[n] for n in ("dark_background", "high_placement", "warm_background") if n != name]
    if name in ("vivid_colour", "crisp_edges", "clean_background"):
        for other in others:
            assert other(liked, "a red circle") == pytest.approx(other(disliked, "a red circle"), abs=0.1)


def test_a_taste_grows_with_its_attribute_across_rendered_scenes():
    heights = [high_placement(image(cy=cy), "a red circle") for cy in (0.2, 0.35, 0.5, 0.65, 0.8)]
    assert heights == sorted(heights, reverse=True)
    blurs = [crisp_edges(image().filter(ImageFilter.GaussianBlur(r)), "a red circle") for r in (0.0, 0.6, 1.2, 2.0)]
    assert blurs == sorted(blurs, reverse=True)
    noise = [clean_background(_noisy(image(), a), "a red circle") for a in (0.0, 0.01, 0.02, 0.04)]
    assert noise == sorted(noise, reverse=True)


def test_the_tastes_split_once_into_tuning_and_held_out_halves():
    assert set(TUNING_TASTES) | set(HELDOUT_TASTES) == set(TASTES) == set(BUILTIN)
    assert not set(TUNING_TASTES) & set(HELDOUT_TASTES)
    assert len(TASTES) >= 8 and len(TUNING_TASTES) == len(HELDOUT_TASTES)
    assert "large_central" in TUNING_TASTES  # the default taste's defaults were tuned on it before
