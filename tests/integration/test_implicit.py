"""Implicit reward accuracy on held-out cached pairs."""

from pathlib import Path

import pytest

from prefdiff.data.cache import CacheSettings, build_cache, finish_cache
from prefdiff.evaluate.implicit import implicit_accuracy
from prefdiff.models import load_backbone
from prefdiff.train.loop import train
from tests.integration_helpers import tiny_config


@pytest.fixture(scope="module")
def cache_and_run(tiny_sd, shapes_parquet, tmp_path_factory):
    root = tmp_path_factory.mktemp("implicit")
    config = tiny_config(tiny_sd, shapes_parquet, root / "run", "lora.enabled=false", "train.max_steps=3", "objective.beta=500")
    finish_cache(root / "cache", build_cache(load_backbone(tiny_sd), config.data, root / "cache", CacheSettings(resolution=32)))
    config.data.path = str(root / "cache")
    train(config)
    return root / "cache", config


def test_the_base_against_itself_ties_every_pair(tiny_sd, cache_and_run, tmp_path):
    cache, config = cache_and_run
    backbone = load_backbone(tiny_sd)
    backbone.unet.save_pretrained(str(tmp_path / "same_unet"))
    result = implicit_accuracy(backbone, cache, config.data, unet=tmp_path / "same_unet", draws=2)
    assert result["implicit_accuracy"] == 0.5 and result["reward_margin"] == 0.0
    assert 0 < result["pairs"] <= 48  # the tie rows of the parquet are dropped


def test_a_dpo_lora_is_judged_against_its_base(tiny_sd, cache_and_run, tmp_path):
    cache, config = cache_and_run
    lora_config = tiny_config(tiny_sd, cache, tmp_path / "lora_run", "train.max_steps=3", "objective.beta=500")
    train(lora_config)
    result = implicit_accuracy(load_backbone(tiny_sd), cache, config.data, lora=tmp_path / "lora_run" / "lora", draws=2)
    assert result["reward_margin"] != 0.0  # the LoRA moved the policy away from its reference


def test_a_tuned_unet_is_judged_on_every_pair(tiny_sd, cache_and_run):
    cache, config = cache_and_run
    result = implicit_accuracy(load_backbone(tiny_sd), cache, config.data, unet=Path(config.output_dir) / "unet", draws=2)
    assert result["implicit_accuracy"] != 0.5 and result["reward_margin"] != 0.0


def test_exactly_one_model_is_given(tiny_sd, cache_and_run):
    cache, config = cache_and_run
    with pytest.raises(ValueError, match="exactly one"):
        implicit_accuracy(load_backbone(tiny_sd), cache, config.data)
