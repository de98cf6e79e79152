"""Soft labels (``data.soft_labels``): the data's preference probability, from the reader through
both collates and the cache into ``PairBatch.labels``; the writers' vote fractions and
Bradley-Terry probabilities; the refusal of an objective without a soft-label loss."""

from __future__ import annotations

import math

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from prefdiff.config import load_config
from prefdiff.data import ReadReport, iter_pairs
from prefdiff.data.cache import CachedPairStream, CacheSettings, build_cache, collate_cached, finish_cache
from prefdiff.data.dataset import build_pair_stream, collate_pairs
from prefdiff.errors import ConfigError, DataError
from prefdiff.models import load_backbone
from prefdiff.stats import bradley_terry_preference, vote_fraction

from .fixtures import v2_row, write_parquet


def _data(path, *overrides):
    return load_config(None, [f"data.path={path}", "data.resolution=32", *overrides]).data


def test_vote_fraction_and_bradley_terry_by_hand():
    """4 of 5 votes: 0.8; 2-2-1: (2 + 0.5)/5 = 0.5; 1-1-3: 2.5/5 = 0.5; 3-1-1: 3.5/5 = 0.7.
    sigmoid(0) = 0.5; sigmoid((2 - 1)/1) = 1/(1 + e^-1) = 0.7310586; sigmoid(-1/0.5) = sigmoid(-2)
    = 0.1192029; a difference of -1000 at T = 1 is 0 without overflow."""
    assert vote_fraction(4, 1) == 0.8
    assert vote_fraction(2, 2, 1) == 0.5 and vote_fraction(1, 1, 3) == 0.5
    assert vote_fraction(3, 1, 1) == pytest.approx(0.7)
    assert bradley_terry_preference(3.0, 3.0, 2.0) == 0.5
    assert bradley_terry_preference(2.0, 1.0, 1.0) == pytest.approx(0.7310586, abs=1e-7)
    assert bradley_terry_preference(0.0, 1.0, 0.5) == pytest.approx(0.1192029, abs=1e-7)
    assert bradley_terry_preference(0.0, 1000.0, 1.0) == pytest.approx(0.0)
    with pytest.raises(ValueError, match="at least one vote"):
        vote_fraction(0, 0, 0)
    with pytest.raises(ValueError, match="temperature must be > 0"):
        bradley_terry_preference(1.0, 0.0, 0.0)


def test_reader_turns_preference_0_into_the_winners_preference(tmp_path):
    """Image 0 won with 0.8: the winner's preference is 0.8; image 1 won with preference_0 0.3:
    the winner (image 1) has 0.7; a kept tie with 0.5; a row without preference_0 (None) falls
    back to 1.0 for a decided label and 0.5 for a tie."""
    rows = [
        v2_row(0, 1.0, preference_0=0.8),
        v2_row(1, 0.0, preference_0=0.3),
        v2_row(2, 0.5, preference_0=0.5),
        v2_row(3, 1.0, preference_0=None),
        v2_row(4, 0.5, preference_0=None),
    ]
    path = write_parquet(tmp_path / "soft.parquet", rows)
    pairs = list(iter_pairs(_data(path, "data.drop_ties=false"), ReadReport()))
    assert [p.preference for p in pairs] == pytest.approx([0.8, 0.7, 0.5, 1.0, 0.5])
    plain = write_parquet(tmp_path / "plain.parquet", [v2_row(0, 1.0), v2_row(1, 0.0)])
    assert [p.preference for p in iter_pairs(_data(plain), ReadReport())] == [1.0, 1.0]


@pytest.mark.parametrize(
    ("row", "message"),
    [
        (v2_row(0, 1.0, preference_0=0.3), r"bad.parquet, row 0: preference_0 disagrees with label_0"),
        (v2_row(0, 0.0, preference_0=0.9), r"bad.parquet, row 0: preference_0 disagrees with label_0"),
        (v2_row(0, 1.0, preference_0=1.5), r"bad.parquet, row 0: preference_0 outside \[0, 1\]"),
    ],
)
def test_inconsistent_preference_is_refused_naming_the_row(tmp_path, row, message):
    path = write_parquet(tmp_path / "bad.parquet", [row])
    with pytest.raises(DataError, match=message):
        list(iter_pairs(_data(path, "data.strict=true"), ReadReport()))
    report = ReadReport()
    assert list(iter_pairs(_data(path), report)) == [] and sum(report.dropped.values()) == 1


@pytest.fixture(scope="module")
def soft_parquet(shapes_parquet, tmp_path_factory):
    """The shapes pairs with a preference_0 on the label's side: 0.9, 0.7, 0.6 in turn (image 0
    won) or 0.1, 0.3, 0.4 (image 1 won), so winners' preferences are 0.9, 0.7, 0.6."""
    table = pq.read_table(shapes_parquet)
    labels = table.column("label_0").to_pylist()
    strengths = [(0.9, 0.7, 0.6)[i % 3] for i in range(len(labels))]
    preference_0 = [s if label == 1.0 else 1.0 - s for s, label in zip(strengths, labels, strict=True)]
    out = tmp_path_factory.mktemp("soft") / "soft.parquet"
    pq.write_table(table.append_column("preference_0", pa.array(preference_0, pa.float64())), out)
    return out


def test_collates_carry_soft_labels_only_when_asked(tiny_sd, soft_parquet, tmp_path):
    """On the fly and from the cache, PairBatch.labels holds the winners' preferences with
    data.soft_labels=true (the same values for the same slots) and ones without."""
    backbone = load_backbone(tiny_sd)
    out = tmp_path / "cache"
    hard_data = _data(soft_parquet)
    finish_cache(out, build_cache(backbone, hard_data, out, CacheSettings(resolution=32, shard_size=8), progress=False))
    slots = list(range(10))
    soft_data = _data(soft_parquet, "data.soft_labels=true")
    live = collate_pairs([build_pair_stream(soft_data, seed=3)[s] for s in slots])
    cached = collate_cached([CachedPairStream(out, 3, soft_data, backbone)[s] for s in slots])
    assert torch.allclose(live.labels, cached.labels)
    assert {round(v, 4) for v in live.labels.tolist()} == {0.9, 0.7, 0.6}
    for batch in (
        collate_pairs([build_pair_stream(hard_data, seed=3)[s] for s in slots]),
        collate_cached([CachedPairStream(out, 3, hard_data, backbone)[s] for s in slots]),
    ):
        assert torch.equal(batch.labels, torch.ones(len(slots)))


def test_a_cache_without_preferences_is_refused_for_soft_labels(tiny_sd, soft_parquet, tmp_path):
    """A shard written before soft labels (no ``preference`` tensor) trains with hard labels and
    is refused, naming the shard, with data.soft_labels=true."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    backbone = load_backbone(tiny_sd)
    out = tmp_path / "cache"
    data = _data(soft_parquet)
    finish_cache(out, build_cache(backbone, data, out, CacheSettings(resolution=32, shard_size=64), progress=False))
    shard = out / "shard_00000.safetensors"
    with safe_open(str(shard), framework="pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys() if k != "preference"}
        metadata = f.metadata()
    save_file(tensors, str(shard), metadata=metadata)
    assert CachedPairStream(out, 0, data, backbone)[0]["preference"] == 1.0
    with pytest.raises(DataError, match=r"shard_00000.safetensors: this cache predates soft labels"):
        CachedPairStream(out, 0, _data(soft_parquet, "data.soft_labels=true"), backbone)[0]


@pytest.mark.parametrize("objective", ["hinge", "mapo", "sft"])
def test_soft_labels_need_an_objective_with_a_soft_label_loss(objective):
    with pytest.raises(ConfigError, match=rf"data.soft_labels.*objective '{objective}' takes hard labels only"):
        load_config(None, ["data.soft_labels=true", f"objective.name={objective}"])
    for name in ("dpo", "ipo"):
        assert load_config(None, ["data.soft_labels=true", f"objective.name={name}"]).data.soft_labels


def test_soft_dpo_loss_uses_the_batch_labels(tiny_sd, soft_parquet):
    """With data.soft_labels the first step's DPO loss is ln 2 whatever the labels (x = 0), and
    its gradient factor is 0.5 * beta * (q - 1/2) averaged over the pairs: beta/2 * (mean q - 1/2)."""
    from prefdiff.objectives.dpo import DPOObjective

    stream = build_pair_stream(_data(soft_parquet, "data.soft_labels=true"), seed=0)
    batch = collate_pairs([stream[s] for s in range(6)])
    errors = torch.full((6,), 0.1)
    out = DPOObjective(beta=100.0)(errors, errors, errors, errors, batch.labels)
    assert float(out.metrics["loss"]) == pytest.approx(math.log(2))
    assert float(out.metrics["grad_factor"]) == pytest.approx(50.0 * (float(batch.labels.mean()) - 0.5), rel=1e-5)
