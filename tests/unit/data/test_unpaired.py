"""Unpaired data for KTO: the images.jsonl reader and its errors, the conversion of pairs
(on the fly and cached) into labelled images with mismatched prompts, and the refusals when
an objective gets the wrong kind of data."""

from __future__ import annotations

import pytest
import torch

from prefdiff.config import load_config
from prefdiff.data.cache import CachedPairStream, CacheSettings, build_cache, finish_cache
from prefdiff.data.dataset import build_pair_stream
from prefdiff.data.unpaired import ImageStream, UnpairedView, collate_unpaired, images_file, read_images_jsonl
from prefdiff.errors import ConfigError, DataError
from prefdiff.models import load_backbone
from prefdiff.train.components import build_pair_data

from ...integration_helpers import write_images_jsonl


def _data(path, *extra):
    return load_config(None, [f"data.path={path}", "data.resolution=32", *extra]).data


def test_images_jsonl_reads_and_streams_with_mismatched_prompts(shapes_parquet, tmp_path):
    path = write_images_jsonl(shapes_parquet, tmp_path / "likes")
    assert images_file(tmp_path / "likes") == path == images_file(path)
    data = _data(path)
    images = read_images_jsonl(path, data)
    assert len(images) == 12 and [i.desirable for i in images[:4]] == [True, False, True, False]
    stream = ImageStream(images, data, seed=0)
    items = [stream[s] for s in range(5)]
    for slot, item in enumerate(items[:4]):
        record = stream.record(slot)
        assert item["prompt"] == record.prompt and item["desirable"] == float(record.desirable)
        assert item["mismatched_prompt"] == stream.record(slot + 1).prompt
        assert item["pixels"].shape == (3, 32, 32)
    batch = collate_unpaired(items[:4])
    assert batch.unpaired and batch.loser_pixels is None and batch.original_size.shape == (4, 2)
    assert batch.mismatched().prompts == [item["mismatched_prompt"] for item in items[:4]]
    assert batch.mismatched().winner_pixels is batch.winner_pixels


def test_bad_images_jsonl_lines_are_named_or_skipped(shapes_parquet, tmp_path):
    path = write_images_jsonl(shapes_parquet, tmp_path / "likes", count=2)
    good = path.read_text()
    bad = [
        ("{not json", "not JSON"),
        ('{"prompt": "a", "image": "img/0_winner.png"}', "missing key.*desirable"),
        ('{"prompt": "a", "image": "img/0_winner.png", "desirable": "yes"}', "bad desirable.*'yes'"),
        ('{"prompt": "a", "image": "img/missing.png", "desirable": true}', "corrupt image"),
        ('{"prompt": " ", "image": "img/0_winner.png", "desirable": true}', "empty prompt"),
    ]
    for line, message in bad:
        path.write_text(good + line + "\n")
        with pytest.raises(DataError, match=rf"images.jsonl line 3: {message}"):
            read_images_jsonl(path, _data(path, "data.strict=true"))
        assert len(read_images_jsonl(path, _data(path))) == 2  # skipped and counted, the rest kept


def test_pairs_convert_to_winner_desirable_loser_undesirable(shapes_parquet):
    data = _data(shapes_parquet, "data.unpaired=true", "objective.name=kto")
    paired = build_pair_stream(data, seed=0)
    view = UnpairedView(paired)
    assert len(view) == 2 * len(paired)
    for pair_slot in range(3):
        pair = paired[pair_slot]
        winner, loser = view[2 * pair_slot], view[2 * pair_slot + 1]
        assert (winner["desirable"], loser["desirable"]) == (1.0, 0.0)
        assert torch.equal(winner["pixels"], pair["winner_pixels"]) and torch.equal(
            loser["pixels"], pair["loser_pixels"]
        )
        assert winner["prompt"] == loser["prompt"] == pair["prompt"]
        assert winner["mismatched_prompt"] == loser["mismatched_prompt"] == paired[pair_slot + 1]["prompt"]
        assert winner["original_size"] == pair["original_size"][0]


def test_cached_pairs_convert_like_pairs_on_the_fly(tiny_sd, shapes_parquet, tmp_path):
    backbone = load_backbone(tiny_sd)
    data = _data(shapes_parquet)
    out = tmp_path / "cache"
    finish_cache(out, build_cache(backbone, data, out, CacheSettings(resolution=32, shard_size=16), progress=False))
    cached = CachedPairStream(out, seed=0, data=data, backbone=backbone)
    view = UnpairedView(cached)
    batch = collate_unpaired([view[s] for s in range(6)])
    assert batch.unpaired and batch.labels.tolist() == [1.0, 0.0] * 3
    for slot in range(6):
        pair = cached[slot // 2]
        side = ("winner", "loser")[slot % 2]
        assert torch.equal(batch.winner_latents.mean[slot], pair[f"{side}_latent_mean"])
        nxt = cached[slot // 2 + 1]["prompt_cond"]
        for key, value in batch.mismatched_prompt_cond.items():
            assert torch.equal(value[slot], nxt[key])
            assert torch.equal(batch.prompt_cond[key][slot], pair["prompt_cond"][key])
    problem = backbone.denoising_problem(batch.mismatched(), 0, 32, torch.device("cpu"), False)
    assert problem.noisy.shape[0] == 6 and not problem.has_losers


def test_each_objective_refuses_the_other_kind_of_data(tiny_sd, shapes_parquet, tmp_path):
    backbone = load_backbone(tiny_sd)
    path = write_images_jsonl(shapes_parquet, tmp_path / "likes", count=2)
    with pytest.raises(DataError, match=rf"{path}: per-image labels .* this objective trains on pairs"):
        build_pair_data(_data(path), 0, backbone, unpaired=False)
    with pytest.raises(
        ConfigError, match=r"holds pairs, but the objective trains on per-image labels: set data.unpaired"
    ):
        build_pair_data(_data(shapes_parquet), 0, backbone, unpaired=True)
    with pytest.raises(ConfigError, match=r"'data.unpaired' converts pair data, but .* already per-image"):
        build_pair_data(_data(path, "objective.name=kto", "data.unpaired=true"), 0, backbone, unpaired=True)
    with pytest.raises(ConfigError, match=r"'data.unpaired' is true but objective 'dpo' trains on pairs"):
        _data(shapes_parquet, "data.unpaired=true")
    with pytest.raises(ConfigError, match=r"'data.unpaired' is true with data.drop_ties=false"):
        _data(shapes_parquet, "objective.name=kto", "data.unpaired=true", "data.drop_ties=false")
    with pytest.raises(DataError, match=r"per-image labels; the latent cache holds pairs"):
        build_cache(backbone, _data(path), tmp_path / "cache", CacheSettings(resolution=32), progress=False)
    stream, collate = build_pair_data(_data(path, "objective.name=kto"), 0, backbone, unpaired=True)
    assert isinstance(stream, ImageStream) and collate is collate_unpaired
