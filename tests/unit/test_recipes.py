"""Packaged recipes: names, the legacy configs/ paths, composition (extends) and its errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from prefdiff.config import load_config, to_dict
from prefdiff.errors import ConfigError
from prefdiff.recipes import (
    describe_recipes,
    list_recipes,
    merge_recipes,
    read_recipe,
    recipe_path,
    resolve,
)

SNAPSHOT = json.loads((Path(__file__).parent / "recipes_before_composition.json").read_text())
"""The six recipes as they were before composition (configs/*.yaml at b30a696), flattened to
dotted keys: what each file set, key by key."""


def flatten(mapping: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``."""
    flat: dict[str, Any] = {}
    for key, value in mapping.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


@pytest.mark.parametrize("name", sorted(SNAPSHOT))
def test_composed_recipe_sets_what_the_old_file_set(name):
    """Composition changed the files, not the recipes: the merged mapping is the old file's."""
    assert flatten(read_recipe(name)) == SNAPSHOT[name]


FLOW_RECIPES = {"sd35_medium_dpo_lora", "flux_dev_dpo_lora", "flux_dev_dpo_full"}
FEW_STEP_RECIPES = {"sdxl_turbo_dpo_lora"}


def test_listed_recipes_are_the_snapshot_and_the_flow_recipes_and_parts_are_hidden():
    assert list_recipes() == sorted(set(SNAPSHOT) | FLOW_RECIPES | FEW_STEP_RECIPES)
    assert {"_paper", "_sd15", "_sdxl", "_tiny", "_flow"} <= set(list_recipes(include_parts=True))


def test_turbo_recipe_trains_on_turbos_four_timesteps_and_validates_like_turbo_samples():
    """SDXL-Turbo's settings: the four trailing timesteps, 512 px, 4-step guidance-free validation,
    and the SDXL paper recipe for everything else; no zero-terminal-SNR rescaling (epsilon)."""
    config = load_config("sdxl_turbo_dpo_lora", [])
    sdxl = load_config("sdxl_dpo_lora", [])
    assert config.train.timesteps == [249, 499, 749, 999] and config.model.timestep_spacing == "trailing"
    assert (config.train.validation_steps, config.train.validation_guidance_scale) == (4, 0.0)
    assert config.data.resolution == 512 and not config.model.zero_terminal_snr
    assert (config.optim.name, config.optim.lr, config.objective.beta) == (sdxl.optim.name, sdxl.optim.lr, 5000)
    assert config.lora.enabled and config.lora.rank == 64


def test_flow_recipes_set_bf16_checkpointing_and_their_strategy():
    for name in FLOW_RECIPES:
        config = load_config(name, [])
        assert config.train.mixed_precision == "bf16" and config.train.gradient_checkpointing, name
        assert config.objective.name == "dpo" and config.objective.beta < 5000, name
        assert config.lora.enabled == name.endswith("lora"), name
    assert load_config("flux_dev_dpo_lora", []).model.guidance == 3.5


def test_every_listed_recipe_has_a_description():
    rows = dict(describe_recipes())
    assert set(rows) == set(list_recipes())
    assert all(rows.values()), rows


@pytest.mark.parametrize("spec", ["sd15_dpo_lora", "sd15_dpo_lora.yaml", "configs/sd15_dpo_lora.yaml"])
def test_names_and_legacy_configs_paths_resolve_to_the_packaged_file(spec, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert resolve(spec) == recipe_path("sd15_dpo_lora")


def test_an_existing_file_wins_over_a_packaged_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "sd15_dpo_lora.yaml").write_text("train:\n  max_steps: 7\n")
    assert load_config("configs/sd15_dpo_lora.yaml").train.max_steps == 7
    assert load_config("sd15_dpo_lora").train.max_steps == 2000


def test_unknown_name_lists_the_known_recipes():
    with pytest.raises(
        ConfigError,
        match=r"unknown recipe 'sd15_dpo_lorra'.*known recipes: flux_dev_dpo_full, .*sd15_dpo_full, sd15_dpo_lora",
    ):
        load_config("sd15_dpo_lorra")


def test_missing_file_names_the_file(tmp_path):
    missing = tmp_path / "mine.yaml"
    with pytest.raises(ConfigError, match=r"config file not found: .*mine\.yaml \(packaged recipes, by name: "):
        load_config(missing)


def test_description_and_extends_never_reach_the_config(tmp_path):
    recipe = tmp_path / "mine.yaml"
    recipe.write_text("extends: tiny_dpo_lora\ndescription: my run\ntrain:\n  max_steps: 3\n")
    assert set(read_recipe(recipe)) == {"model", "data", "lora", "objective", "optim", "train", "output_dir"}
    cfg = load_config(recipe)
    assert cfg.train.max_steps == 3 and cfg.objective.beta == 1000.0


def test_child_overrides_parent_mappings_merge_lists_and_null_replace(tmp_path):
    (tmp_path / "base.yaml").write_text(
        "train:\n  max_steps: 10\n  batch_size: 4\n  validation_prompts: [a, b]\noptim:\n  max_grad_norm: 2.0\n"
    )
    child = tmp_path / "child.yaml"
    child.write_text(
        "extends: base.yaml\ntrain:\n  max_steps: 5\n  validation_prompts: [c]\noptim:\n  max_grad_norm: null\n"
    )
    assert read_recipe(child) == {
        "train": {"max_steps": 5, "batch_size": 4, "validation_prompts": ["c"]},
        "optim": {"max_grad_norm": None},
    }


def test_merge_recipes_does_not_touch_its_inputs():
    parent = {"train": {"max_steps": 1, "seed": 0}}
    merged = merge_recipes(parent, {"train": {"max_steps": 2}})
    assert merged == {"train": {"max_steps": 2, "seed": 0}} and parent == {"train": {"max_steps": 1, "seed": 0}}


def test_a_user_file_can_extend_a_packaged_part(tmp_path):
    recipe = tmp_path / "mine.yaml"
    recipe.write_text("extends: _sd15\nlora:\n  rank: 16\noutput_dir: runs/mine\n")
    cfg = load_config(recipe)
    assert (cfg.lora.rank, cfg.optim.name, cfg.train.max_steps, cfg.data.resolution) == (16, "adamw", 2000, 512)


def test_extends_cycle_is_named_with_the_file(tmp_path):
    (tmp_path / "a.yaml").write_text("extends: b.yaml\n")
    (tmp_path / "b.yaml").write_text("extends: a.yaml\n")
    with pytest.raises(ConfigError, match=r"b\.yaml: extends cycle: a\.yaml -> b\.yaml -> a\.yaml"):
        read_recipe(tmp_path / "a.yaml")


def test_a_file_that_extends_itself_is_a_cycle(tmp_path):
    (tmp_path / "a.yaml").write_text("extends: a.yaml\n")
    with pytest.raises(ConfigError, match=r"a\.yaml: extends cycle: a\.yaml -> a\.yaml"):
        read_recipe(tmp_path / "a.yaml")


def test_unknown_parent_names_the_file_and_the_known_recipes(tmp_path):
    child = tmp_path / "child.yaml"
    child.write_text("extends: sd16_dpo_lora\n")
    with pytest.raises(
        ConfigError,
        match=r"child\.yaml: extends 'sd16_dpo_lora': unknown recipe 'sd16_dpo_lora'; known recipes: "
        r"flux_dev_dpo_full, .*sd15",
    ):
        read_recipe(child)


def test_missing_parent_file_names_both_files(tmp_path):
    child = tmp_path / "child.yaml"
    child.write_text("extends: gone.yaml\n")
    with pytest.raises(ConfigError, match=r"child\.yaml: extends 'gone\.yaml': file not found: .*gone\.yaml"):
        read_recipe(child)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("extends: [a, b]\n", "'extends' must be one recipe name or a .yaml path"),
        ("description: {a: 1}\n", "'description' must be one line of text"),
        ("- a\n- b\n", "expected a mapping of config keys at the top level, got list"),
        ("train: [\n", "not valid YAML"),
    ],
)
def test_malformed_recipe_files_name_the_file(text, message, tmp_path):
    recipe = tmp_path / "bad.yaml"
    recipe.write_text(text)
    with pytest.raises(
        ConfigError, match=r"bad\.yaml: " + message.replace("(", r"\(").replace("[", r"\[").replace(".", r"\.")
    ):
        read_recipe(recipe)


def test_an_error_in_a_parent_names_the_parent(tmp_path):
    (tmp_path / "base.yaml").write_text("train: [\n")
    (tmp_path / "child.yaml").write_text("extends: base.yaml\n")
    with pytest.raises(ConfigError, match=r"base\.yaml: not valid YAML"):
        read_recipe(tmp_path / "child.yaml")


def test_unknown_key_from_a_recipe_names_the_recipe(tmp_path):
    recipe = tmp_path / "mine.yaml"
    recipe.write_text("extends: tiny_dpo_lora\ntrain:\n  max_stepz: 3\n")
    with pytest.raises(ConfigError, match=r"mine\.yaml: unknown config key 'train\.max_stepz'"):
        load_config(recipe)


def test_name_and_legacy_path_resolve_to_the_same_config():
    assert to_dict(load_config("configs/sdxl_dpo_full.yaml")) == to_dict(load_config("sdxl_dpo_full"))
