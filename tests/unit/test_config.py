import pytest

from prefdiff.config import Config, describe, load_config
from prefdiff.errors import ConfigError
from prefdiff.recipes import list_recipes

RECIPES = list_recipes()


def test_overrides_parse_types():
    cfg = load_config(
        None, ["optim.lr=1e-6", "objective.beta=2500", "lora.enabled=false", "train.validation_prompts=[a cat, a dog]"]
    )
    assert cfg.optim.lr == 1e-6 and isinstance(cfg.optim.lr, float)
    assert cfg.objective.beta == 2500.0
    assert cfg.lora.enabled is False
    assert cfg.train.validation_prompts == ["a cat", "a dog"]


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("optim.lrr=1", "unknown config key 'optim.lrr'"),
        ("nope.x=1", "unknown config key 'nope'"),
        ("train.max_steps=ten", "'train.max_steps': expected an integer"),
        ("lora.enabled=maybe", "'lora.enabled': expected true/false"),
        ("optim.name=sgdx", "'optim.name'"),
        ("data.resolution=30", "'data.resolution' must be a positive multiple of 8"),
        ("train.max_steps", "not of the form key=value"),
        ("train.log_every=0", "'train.log_every' must be >= 1"),
        ("train.global_batch_pairs=0", "'train.global_batch_pairs' must be >= 1"),
        ("data.max_pairs=0", "'data.max_pairs' must be >= 1"),
        ("lora.dropout=1.0", "'lora.dropout' must be in"),
    ],
)
def test_bad_overrides_name_the_key(override, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace("[", r"\[")):
        load_config(None, [override])


def test_yaml_words_that_are_not_strings_to_yaml():
    """YAML 1.1 reads `no` as false and 2024-01-01 as a date; the config takes what was meant."""
    cfg = load_config(None, ["train.mixed_precision=no", "data.path=2024-01-01", "output_dir=123"])
    assert cfg.train.mixed_precision == "no" and cfg.data.path == "2024-01-01" and cfg.output_dir == "123"


def test_yaml_unknown_key_names_file_and_key(tmp_path):
    recipe = tmp_path / "bad.yaml"
    recipe.write_text("train:\n  max_stepz: 3\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: unknown config key 'train.max_stepz'"):
        load_config(recipe)


def test_every_field_has_help():
    rows = describe(Config)
    assert len(rows) > 30
    missing = [key for key, _, help_text in rows if not help_text]
    assert missing == []


def test_recipes_exist():
    assert {"tiny_dpo_lora", "sd15_dpo_lora", "sd15_dpo_full", "sdxl_dpo_lora", "sdxl_dpo_full"} <= set(RECIPES)


@pytest.mark.parametrize("recipe", RECIPES)
def test_every_recipe_loads_and_validates(recipe):
    cfg = load_config(recipe)
    assert cfg.train.max_steps >= 1
    if recipe.startswith(("sd15", "sdxl")):
        # the paper's setups: effective batch 2048, lr 1e-8 per pair, beta in [2000, 5000], warm-up
        assert cfg.train.global_batch_pairs == 2048
        assert cfg.optim.lr == pytest.approx(2048 * 1e-8)
        assert 2000 <= cfg.objective.beta <= 5000
        assert cfg.optim.warmup_steps > 0
        assert cfg.optim.name == ("adafactor" if recipe.startswith("sdxl") else "adamw")


def test_reference_lists_what_is_registered():
    """`prefdiff config --reference` derives its names from the registries."""
    from prefdiff.config import describe
    from prefdiff.data.formats import DATA_FORMATS
    from prefdiff.models.base import BACKBONES
    from prefdiff.objectives import OBJECTIVES

    rows = {key: help_text for key, _, help_text in describe()}
    assert all(f"{name}:" in rows["objective.name"] for name in OBJECTIVES.names())
    betas = [help_text for key, _, help_text in describe() if key == "objective.beta"]
    assert betas[0].startswith("(dpo)") and len(betas) == len({h for h in betas})  # one row per distinct key
    assert all(name in rows["data.format"] for name in DATA_FORMATS.names())
    assert all(name in rows["model.path"] for name in BACKBONES.names())


def test_unknown_data_format_lists_the_known_ones():
    with pytest.raises(ConfigError, match=r"config key 'data.format': unknown data format 'xyz' \(known: .*pickapic"):
        load_config(None, ["data.format=xyz"])
