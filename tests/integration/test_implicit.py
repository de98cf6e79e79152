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
    config = tiny_config(
        tiny_sd, shapes_parquet, root / "run", "lora.enabled=false", "train.max_steps=3", "objective.beta=500"
    )
    finish_cache(
        root / "cache", build_cache(load_backbone(tiny_sd), config.data, root / "cache", CacheSettings(resolution=32))
    )
    config.data.path = str(root / "cache")
    train(config)
    return root / "cache", config


def test_the_base_against_itself_ties_every_pair(tiny_sd, cache_and_run, tmp_path):
    cache, config = cache_and_run
    backbone = load_backbone(tiny_sd)
    backbone.unet.save_pretrained(str(tmp_path / "same_unet"))
    result = implicit_accuracy(backbone, cache, config.data, denoiser=tmp_path / "same_unet", draws=2)
    assert result["implicit_accuracy"] == 0.5 and result["reward_margin"] == 0.0
    assert 0 < result["pairs"] <= 48  # the tie rows of the parquet are dropped


def test_a_dpo_lora_is_judged_against_its_base(tiny_sd, cache_and_run, tmp_path):
    """DPO on these pairs raises the implicit accuracy on them above chance, and training on the
    same pairs with winner and loser swapped lowers it below: the measure follows what the
    model learnt, not merely that it changed."""
    cache, config = cache_and_run
    results = {}
    for swapped in (False, True):
        run = tmp_path / f"lora_run_{swapped}"
        lora_config = tiny_config(
            tiny_sd, cache, run, "train.max_steps=40", "train.batch_size=4", "objective.beta=500", "optim.lr=3e-3"
        )
        train(lora_config, backbone=_swapped(load_backbone(tiny_sd)) if swapped else None)
        results[swapped] = implicit_accuracy(load_backbone(tiny_sd), cache, config.data, lora=run / "lora", draws=2)
    assert results[False]["implicit_accuracy"] > 0.5 > results[True]["implicit_accuracy"]
    assert results[False]["reward_margin"] > 0 > results[True]["reward_margin"]


def _swapped(backbone):
    """The backbone, with each pair's winner and loser latents exchanged before the problem is built."""
    from dataclasses import replace

    build = backbone.denoising_problem

    def swapped_problem(batch, *args, **kwargs):
        batch = replace(batch, winner_latents=batch.loser_latents, loser_latents=batch.winner_latents)
        return build(batch, *args, **kwargs)

    backbone.denoising_problem = swapped_problem
    return backbone


def test_a_tuned_unet_is_judged_on_every_pair(tiny_sd, cache_and_run):
    cache, config = cache_and_run
    result = implicit_accuracy(
        load_backbone(tiny_sd), cache, config.data, denoiser=Path(config.output_dir) / "unet", draws=2
    )
    assert result["implicit_accuracy"] != 0.5 and result["reward_margin"] != 0.0


def test_exactly_one_model_is_given(tiny_sd, cache_and_run):
    cache, config = cache_and_run
    with pytest.raises(ValueError, match="exactly one"):
        implicit_accuracy(load_backbone(tiny_sd), cache, config.data)


def test_bf16_autocast_measures_the_same_model(tiny_sd, cache_and_run):
    """bf16 runs the denoisers under autocast: not the fp32 numbers to the bit, but the same
    verdict on nearly every pair; fp16 on a CPU is refused in one line."""
    import torch

    from prefdiff.errors import ConfigError

    cache, config = cache_and_run
    unet = Path(config.output_dir) / "unet"
    full = implicit_accuracy(load_backbone(tiny_sd), cache, config.data, denoiser=unet, draws=2)
    half = implicit_accuracy(load_backbone(tiny_sd), cache, config.data, denoiser=unet, draws=2, dtype="bf16")
    assert half["pairs"] == full["pairs"]
    assert half["reward_margin"] != full["reward_margin"]
    assert half["implicit_accuracy"] == pytest.approx(full["implicit_accuracy"], abs=0.1)
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="--dtype fp16 needs a GPU"):
            implicit_accuracy(load_backbone(tiny_sd), cache, config.data, denoiser=unet, dtype="fp16")


def test_the_command_reports_what_the_function_measures(tiny_sd, cache_and_run, tmp_path):
    import json

    from typer.testing import CliRunner

    from prefdiff.cli import app

    cache, config = cache_and_run
    unet = Path(config.output_dir) / "unet"
    direct = implicit_accuracy(load_backbone(tiny_sd), cache, config.data, denoiser=unet, draws=2)
    common = ["implicit-accuracy", "--model", str(tiny_sd), "--cache", str(cache), "--draws", "2"]
    result = CliRunner().invoke(app, [*common, "--denoiser", str(unet), "--out", str(tmp_path / "r.json")])
    assert result.exit_code == 0, result.output
    saved = json.loads((tmp_path / "r.json").read_text())
    assert saved["implicit_accuracy"] == direct["implicit_accuracy"] and saved["pairs"] == direct["pairs"]
    assert saved["dtype"] == "fp32" and saved["denoiser"] == str(unet) and saved["lora"] is None
    assert f"implicit accuracy {direct['implicit_accuracy']:.1%} over {direct['pairs']} pairs" in result.output
    neither = CliRunner().invoke(app, common)
    assert neither.exit_code != 0 and "exactly one of --lora or --denoiser" in str(neither.exception)
