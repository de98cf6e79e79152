"""Streaming: deterministic, resumable at a slot, each pair once per epoch, one window in memory;
and the slot contract (items depend on the slot alone) for both streaming and in-memory data."""

from __future__ import annotations

import io
import logging
import pickle

import pytest
import torch
from PIL import Image

from prefdiff.config import load_config
from prefdiff.data.dataset import PairStream, StreamingPairStream, build_pair_stream
from prefdiff.errors import DataError

from .fixtures import (
    colour_of,
    damage_row_group,
    jpeg,
    streaming_parquet,
    truncated_jpeg,
    v2_row,
    write_parquet,
    write_saved_datasets_dir,
)

NUM_ROWS, TIE_EVERY = 100, 10  # 90 candidates in 3 files x 5 row groups of 8 (the last smaller)


def _data(path, *overrides):
    return load_config(None, [f"data.path={path}", "data.resolution=16", *overrides]).data


def _stream(path, seed=0, *overrides) -> StreamingPairStream:
    stream = build_pair_stream(_data(path, "data.streaming=true", "data.shuffle_buffer=20", *overrides), seed)
    assert isinstance(stream, StreamingPairStream)
    return stream


def _prompts(stream: StreamingPairStream, slots: range) -> list[str]:
    return [stream.windows.candidate(slot).pair.prompt for slot in slots]


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return streaming_parquet(
        tmp_path_factory.mktemp("stream"), NUM_ROWS, files=3, row_group_size=8, tie_every=TIE_EVERY
    )


def test_every_pair_once_per_epoch_in_a_shuffled_order(shards):
    stream = _stream(shards)
    kept = [f"p{i}" for i in range(NUM_ROWS) if i % TIE_EVERY != TIE_EVERY - 1]
    assert len(stream) == len(kept) == 90
    assert stream.report.kept == 90 and stream.report.dropped == {"tie": 10}
    epoch_0, epoch_1 = _prompts(stream, range(0, 90)), _prompts(stream, range(90, 180))
    assert sorted(epoch_0) == sorted(kept) and sorted(epoch_1) == sorted(kept)
    assert epoch_0 != kept and epoch_0 != epoch_1  # shuffled, and differently each epoch
    plan = stream.windows.plan(0)
    assert len(plan.starts) - 1 >= 3, "several windows"
    assert all(b - a >= 20 for a, b in zip(plan.starts[:-1], plan.starts[1:], strict=True))


def test_order_is_deterministic_and_resumes_without_reading_skipped_windows(shards):
    straight = _prompts(_stream(shards, seed=3), range(0, 200))
    assert straight == _prompts(_stream(shards, seed=3), range(0, 200))
    assert straight != _prompts(_stream(shards, seed=4), range(0, 200))
    for k in (37, 90, 151):
        resumed = _stream(shards, seed=3)
        assert _prompts(resumed, range(k, k + 1)) == straight[k : k + 1]
        assert resumed.windows.windows_loaded == 1  # only the window holding slot k was read
        assert _prompts(resumed, range(k + 1, 200)) == straight[k + 1 :]


def test_items_depend_on_the_slot_alone(shards):
    """The item for a slot is the same from a fresh stream, in any access order, after pickling
    (DataLoader workers), and its winner is the pair's winner (colour named by the prompt)."""
    stream = _stream(shards, 0, "data.random_flip=true", "data.center_crop=false")
    forward = {slot: stream[slot] for slot in range(0, 40, 3)}
    backward = {
        slot: _stream(shards, 0, "data.random_flip=true", "data.center_crop=false")[slot]
        for slot in reversed(range(0, 40, 3))
    }
    worker = pickle.loads(pickle.dumps(stream))
    for slot, item in forward.items():
        for other in (backward[slot], worker[slot]):
            assert other["prompt"] == item["prompt"]
            assert torch.equal(other["winner_pixels"], item["winner_pixels"])
            assert torch.equal(other["loser_pixels"], item["loser_pixels"])
        index = int(item["prompt"][1:])
        expected = torch.tensor(colour_of(index % 64), dtype=torch.float32) / 127.5 - 1
        assert torch.allclose(item["winner_pixels"][:, 8, 8], expected, atol=0.1)
        assert torch.allclose(item["loser_pixels"][:, 8, 8], torch.full((3,), -1.0), atol=0.1)


def test_max_pairs_takes_the_first_pairs_in_storage_order(shards):
    stream = _stream(shards, 0, "data.max_pairs=25")
    assert len(stream) == 25 and stream.report.stopped_at_max_pairs
    first = [f"p{i}" for i in range(NUM_ROWS) if i % TIE_EVERY != TIE_EVERY - 1][:25]
    assert sorted(_prompts(stream, range(25))) == sorted(first)


def test_saved_datasets_dir_streams_by_record_batch(tmp_path):
    rows = [v2_row(i, float(i % 2)) for i in range(30)]
    saved = write_saved_datasets_dir(tmp_path / "saved", [rows[:13], rows[13:]], batch_rows=4)
    stream = _stream(saved, 0, "data.shuffle_buffer=6")
    assert sorted(_prompts(stream, range(30))) == sorted(f"prompt {i}" for i in range(30))
    assert len(stream.windows.chunks) == 9  # 13 rows: 4 batches of <= 4; 17 rows: 5


def _corrupt_rows():
    rows = [
        {"caption": f"c{i}", "jpg_0": jpeg(colour_of(i)), "jpg_1": jpeg((0, 0, 0)), "label_0": 1.0} for i in range(12)
    ]
    rows[5]["jpg_1"] = truncated_jpeg()  # passes the header check: found only when decoded
    return rows


def test_corrupt_image_at_training_time_is_substituted_and_counted(tmp_path, caplog):
    path = write_parquet(tmp_path / "bad.parquet", _corrupt_rows(), row_group_size=4)
    stream = _stream(path, 0, "data.shuffle_buffer=4")
    slot = next(s for s in range(12) if stream.windows.candidate(s).pair.prompt == "c5")
    with caplog.at_level(logging.WARNING, logger="prefdiff.data"):
        item = stream[slot]
    assert item["prompt"] != "c5" and item["slot"] == slot
    assert stream.substitutions == {"corrupt image": 1}
    assert "bad.parquet:5" in caplog.text
    again = _stream(path, 0, "data.shuffle_buffer=4")[slot]  # deterministic substitute
    assert again["prompt"] == item["prompt"] and torch.equal(again["winner_pixels"], item["winner_pixels"])
    strict = _stream(path, 0, "data.shuffle_buffer=4", "data.strict=true")
    with pytest.raises(DataError, match=r"bad.parquet, row 5: corrupt image \(loser: cannot decode"):
        strict[slot]


def test_in_memory_stream_substitutes_the_next_slots_pair(tmp_path):
    path = write_parquet(tmp_path / "bad.parquet", _corrupt_rows())
    stream = build_pair_stream(_data(path), seed=0)
    assert isinstance(stream, PairStream) and len(stream) == 12
    slot = next(s for s in range(12) if stream.pairs[stream.pair_index(s)].prompt == "c5")
    assert stream[slot]["prompt"] == stream.pairs[stream.pair_index(slot + 1)].prompt
    assert stream.substitutions == {"corrupt image": 1}
    strict = build_pair_stream(_data(path, "data.strict=true"), seed=0)
    with pytest.raises(DataError, match=r"bad.parquet:5.*corrupt image"):
        strict[slot]


def test_streaming_auto_switches_on_size(shards):
    assert isinstance(build_pair_stream(_data(shards), 0), PairStream)
    assert isinstance(build_pair_stream(_data(shards, "data.stream_above_mb=0.001"), 0), StreamingPairStream)


def test_one_crop_and_one_flip_for_both_images_of_a_streamed_pair(tmp_path):
    half = Image.new("RGB", (48, 32), (255, 0, 0))
    half.paste((0, 0, 255), (24, 0, 48, 32))
    buffer = io.BytesIO()
    half.save(buffer, format="PNG")
    rows = [
        {"caption": f"c{i}", "jpg_0": buffer.getvalue(), "jpg_1": buffer.getvalue(), "label_0": 1.0} for i in range(8)
    ]
    stream = _stream(
        write_parquet(tmp_path / "half.parquet", rows), 0, "data.random_flip=true", "data.center_crop=false"
    )
    flips = set()
    for slot in range(8):
        item = stream[slot]
        assert torch.equal(item["winner_pixels"], item["loser_pixels"])
        assert item["crop_top_left"][0] == item["crop_top_left"][1]
        flips.add(bool(item["winner_pixels"][2, 0, 0] > 0))  # blue at the left edge: flipped
    assert flips == {True, False}


def test_strict_streaming_index_names_a_bad_label(tmp_path):
    rows = [{"caption": f"c{i}", "jpg_0": jpeg((9, 9, 9)), "jpg_1": jpeg((0, 0, 0)), "label_0": 1.0} for i in range(6)]
    rows[4]["label_0"] = 0.25
    path = write_parquet(tmp_path / "labels.parquet", rows, row_group_size=2)
    assert _stream(path).report.dropped == {"label_0 outside {0, 0.5, 1}": 1}
    with pytest.raises(DataError, match=r"labels.parquet, row 4: label_0 outside \{0, 0.5, 1\}"):
        _stream(path, 0, "data.strict=true")


def test_row_group_damaged_after_indexing_is_substituted(tmp_path):
    """The label scan reads fine, the image column of row group 1 does not: its pairs are
    substituted from the rest of the window, never crash a non-strict run."""
    rows = [
        {"caption": f"c{i}", "jpg_0": jpeg(colour_of(i)), "jpg_1": jpeg((0, 0, 0)), "label_0": 1.0} for i in range(12)
    ]
    path = damage_row_group(write_parquet(tmp_path / "dmg.parquet", rows, row_group_size=4), row_group=1, column=1)
    stream = _stream(path, 0, "data.shuffle_buffer=12")
    assert len(stream) == 12
    prompts = [stream[slot]["prompt"] for slot in range(12)]
    assert not {"c4", "c5", "c6", "c7"} & set(prompts)
    assert stream.substitutions["unreadable row group"] >= 4
    with pytest.raises(DataError, match=r"dmg.parquet, rows 4-7: unreadable row group"):
        [_stream(path, 0, "data.shuffle_buffer=12", "data.strict=true")[slot] for slot in range(12)]


def test_dataloader_workers_see_the_same_batches(shards):
    """Two worker processes (each with its own window) give the batches one process gives."""
    from torch.utils.data import DataLoader

    from prefdiff.data.dataset import SlotBatchSampler, collate_pairs

    def batches(workers: int) -> list[dict]:
        stream = _stream(shards, 5)
        loader = DataLoader(
            stream, batch_sampler=SlotBatchSampler(70, 8), collate_fn=collate_pairs, num_workers=workers
        )
        out = []
        for batch in loader:
            out.append(batch)
            if len(out) == 4:
                return out
        return out

    for one, two in zip(batches(0), batches(2), strict=True):
        assert one.prompts == two.prompts and one.slots == two.slots
        assert torch.equal(one.winner_pixels, two.winner_pixels)
