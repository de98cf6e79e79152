"""Oracles: faithfulness first, then each one's unstated taste."""

import pytest

from prefdiff.errors import ConfigError
from prefdiff.evaluate.scorers import load_mixed
from prefdiff.toy.oracle import (
    dark_background,
    faithfulness,
    large_central,
    oracle_fingerprint,
    oracle_spec,
    small_objects,
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


@pytest.mark.parametrize("oracle", [large_central, dark_background, small_objects])
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
    with pytest.raises(ConfigError, match="large_central, dark_background, small_objects"):
        oracle_spec("large-central")
