"""The latent cache: round trip, resume after a kill, refusal of a mismatching model, and
training from it equal to training on the fly."""

from __future__ import annotations

import pytest
import torch

from prefdiff.config import load_config
from prefdiff.data import cache as cache_module
from prefdiff.data.cache import (
    CachedPairStream,
    CacheSettings,
    build_cache,
    collate_cached,
    finish_cache,
)
from prefdiff.data.dataset import build_pair_stream, collate_pairs
from prefdiff.errors import DataError
from prefdiff.models import load_backbone


def _data(path, *extra):
    return load_config(None, [f"data.path={path}", "data.resolution=32", *extra]).data


def _build(backbone, data, out, **settings):
    identity = build_cache(
        backbone, data, out, CacheSettings(resolution=32, shard_size=8, batch_size=6, **settings), progress=False
    )
    return finish_cache(out, identity)


@pytest.fixture(scope="module")
def built_cache(tiny_sd, shapes_parquet, tmp_path_factory):
    out = tmp_path_factory.mktemp("cache")
    info = _build(load_backbone(tiny_sd), _data(shapes_parquet), out, flip_copies=True)
    return out, info


def test_round_trip_equals_on_the_fly_encoding(tiny_sd, shapes_parquet, built_cache):
    out, info = built_cache
    backbone = load_backbone(tiny_sd)
    for flip in (False, True):
        data = _data(shapes_parquet, f"data.random_flip={str(flip).lower()}")
        cached = CachedPairStream(out, seed=0, data=data, backbone=backbone)
        live = build_pair_stream(data, seed=0)
        assert len(cached) == len(live) == info["num_pairs"]
        slots = list(range(6))
        from_cache = collate_cached([cached[s] for s in slots])
        from_pixels = collate_pairs([live[s] for s in slots])
        for side in ("winner", "loser"):
            mean, std = backbone.latent_distribution(getattr(from_pixels, f"{side}_pixels"))
            stats = getattr(from_cache, f"{side}_latents")
            assert torch.allclose(stats.mean, mean, atol=2e-3, rtol=2e-3)
            assert torch.allclose(stats.std, std, atol=2e-3, rtol=2e-3)
        cond = backbone.encode_prompts(from_pixels.prompts)
        assert torch.allclose(from_cache.prompt_cond["encoder_hidden_states"], cond["encoder_hidden_states"], atol=5e-3)
        assert torch.equal(from_cache.original_size, from_pixels.original_size.int())
        assert torch.equal(from_cache.crop_top_left, from_pixels.crop_top_left.int())
        assert from_cache.slots == from_pixels.slots == slots and torch.equal(from_cache.labels, from_pixels.labels)


def test_cache_resumes_after_an_interruption(tiny_sd, shapes_parquet, tmp_path, monkeypatch):
    backbone = load_backbone(tiny_sd)
    data = _data(shapes_parquet)
    real_write = cache_module._write_shard
    written: list[str] = []

    def dying_write(path, encoded):
        if len(written) == 2:
            raise KeyboardInterrupt("killed")
        real_write(path, encoded)
        written.append(path.name)

    monkeypatch.setattr(cache_module, "_write_shard", dying_write)
    with pytest.raises(KeyboardInterrupt):
        _build(backbone, data, tmp_path)
    assert (
        sorted(p.name for p in tmp_path.glob("shard_*"))
        == written
        == ["shard_00000.safetensors", "shard_00001.safetensors"]
    )
    assert not (tmp_path / "cache_info.json").exists()
    assert cache_module.is_cache_dir(tmp_path)
    with pytest.raises(DataError, match="the cache is incomplete; run `prefdiff cache` again"):
        cache_module.load_cache_info(tmp_path)

    monkeypatch.setattr(
        cache_module, "_write_shard", lambda path, encoded: (written.append(path.name), real_write(path, encoded))
    )
    info = _build(backbone, data, tmp_path)
    assert written[2:] == [f"shard_{i:05d}.safetensors" for i in range(2, len(info["shards"]))]  # nothing redone
    reference = _build(backbone, data, tmp_path / "straight")
    assert info["num_pairs"] == reference["num_pairs"]


def test_mismatching_model_is_refused(tiny_sd, shapes_parquet, built_cache, tmp_path):
    from prefdiff.models.tiny import build_tiny_pipeline

    out, _ = built_cache
    other = load_backbone(build_tiny_pipeline(tmp_path / "other", "sd", seed=1))
    with pytest.raises(
        DataError, match=r"different model or transform: text_encoder: cache has '\w+', this run has '\w+'"
    ):
        CachedPairStream(out, seed=0, data=_data(shapes_parquet), backbone=other)
    same = load_backbone(tiny_sd)
    with pytest.raises(DataError, match="resolution: cache has 32, data.resolution is 64"):
        CachedPairStream(
            out, seed=0, data=load_config(None, [f"data.path={out}", "data.resolution=64"]).data, backbone=same
        )


def test_no_flip_copies_refuses_random_flip(tiny_sd, shapes_parquet, tmp_path):
    backbone = load_backbone(tiny_sd)
    _build(backbone, _data(shapes_parquet), tmp_path)
    with pytest.raises(DataError, match="no flipped copies; rebuild with --flip-copies"):
        CachedPairStream(tmp_path, seed=0, data=_data(shapes_parquet, "data.random_flip=true"), backbone=backbone)


def test_training_from_cache_matches_on_the_fly_and_never_encodes(
    tiny_sd, shapes_parquet, built_cache, tmp_path, monkeypatch
):
    """Same seed, same pairs in the same order, same noise: the first step's errors and loss agree
    (to fp16 storage precision), and the cached run never decodes an image nor runs an encoder."""
    from prefdiff.data import dataset as dataset_module
    from prefdiff.models.base import Backbone
    from prefdiff.train.loop import train

    from ...integration_helpers import metrics, tiny_config

    out, _ = built_cache
    common = ("train.max_steps=2", "data.random_flip=true", "objective.beta=500")
    train(tiny_config(tiny_sd, shapes_parquet, tmp_path / "live", *common))

    def forbidden(*args, **kwargs):
        raise AssertionError("encoder or image decoder called while training from a cache")

    monkeypatch.setattr(Backbone, "latent_distribution", forbidden)
    monkeypatch.setattr(dataset_module, "open_image", forbidden)
    monkeypatch.setattr(load_backbone(tiny_sd).__class__, "encode_prompts", forbidden)
    train(tiny_config(tiny_sd, out, tmp_path / "cached", *common))
    live, cached = metrics(tmp_path / "live"), metrics(tmp_path / "cached")
    for key in ("policy_err_w", "policy_err_l", "ref_err_w", "ref_err_l"):
        assert cached[0][key] == pytest.approx(live[0][key], rel=1e-3)
    assert cached[0]["loss"] == pytest.approx(live[0]["loss"], abs=1e-6)
    assert cached[1]["loss"] == pytest.approx(live[1]["loss"], abs=5e-3)


def test_resuming_an_interrupted_build_with_other_settings_is_refused(tiny_sd, shapes_parquet, tmp_path, monkeypatch):
    backbone = load_backbone(tiny_sd)
    real_write = cache_module._write_shard

    def dying_write(path, encoded):
        real_write(path, encoded)
        raise KeyboardInterrupt("killed")

    monkeypatch.setattr(cache_module, "_write_shard", dying_write)
    with pytest.raises(KeyboardInterrupt):
        _build(backbone, _data(shapes_parquet), tmp_path)
    monkeypatch.setattr(cache_module, "_write_shard", real_write)
    with pytest.raises(DataError, match="holds a cache made differently.*flip_copies"):
        _build(backbone, _data(shapes_parquet), tmp_path, flip_copies=True)
