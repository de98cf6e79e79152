"""Pick-a-Pic v1/v2: parquet files, shard directories and saved datasets (Arrow) directories."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

from prefdiff.config import load_config
from prefdiff.data import ReadReport, iter_pairs, open_image, read_pickapic
from prefdiff.data.transforms import transform_pair
from prefdiff.errors import DataError

from .fixtures import (
    BLUE,
    RED,
    V2_COLUMNS,
    damage_row_group,
    jpeg,
    truncated_jpeg,
    v2_row,
    write_parquet,
    write_saved_datasets_dir,
)


def _data(path, *overrides):
    return load_config(None, [f"data.path={path}", *overrides]).data


def _pixel(source):
    return open_image(source).getpixel((4, 4))


def _near(a, b, tol=8):
    return all(abs(x - y) <= tol for x, y in zip(a, b, strict=True))


def _v2_rows():
    """Twelve v2 rows: 4 good, and one of each reason to drop."""
    return [
        v2_row(0, 1.0),  # kept: image 0 (red) won
        v2_row(1, 0.0),  # kept: image 1 (blue) won
        v2_row(2, 0.5),  # tie
        v2_row(3, 1.0, has_label=False),  # has_label is false
        v2_row(4, 1.0, are_different=False),  # are_different is false
        v2_row(5, 0.7, label_1=0.3),  # label outside {0, 0.5, 1}
        v2_row(6, 1.0, caption="  "),  # empty caption
        v2_row(7, 1.0, jpg_1=b"\xff\xd8not a jpeg"),  # corrupt JPEG
        v2_row(8, 0.0, jpg_0=None),  # image missing
        v2_row(9, 1.0, label_1=1.0),  # label_1 contradicts label_0
        v2_row(10, 0.0, jpg_0=truncated_jpeg()),  # truncated: only a full check sees it
        v2_row(11, 1.0),  # kept
    ]


@pytest.fixture
def v2_parquet(tmp_path):
    return write_parquet(tmp_path / "v2.parquet", _v2_rows(), row_group_size=5)


def test_v2_drop_counts_winner_first_and_provenance(v2_parquet):
    report = ReadReport()
    pairs = list(iter_pairs(_data(v2_parquet), report))
    assert [p.prompt for p in pairs] == ["prompt 0", "prompt 1", "prompt 10", "prompt 11"]
    assert report.kept == 4
    assert report.dropped == {
        "tie": 1,
        "has_label is false": 1,
        "are_different is false": 1,
        "label_0 outside {0, 0.5, 1}": 1,
        "empty caption": 1,
        "corrupt image": 1,
        "image missing": 1,
        "label_1 is not 1 - label_0": 1,
    }
    assert report.examples["corrupt image"] == ["v2.parquet:7"]
    assert "dropped 1 (tie; e.g. rows v2.parquet:2)" in report.summary()
    # winner first: label_0 = 1 -> red (image 0) won; label_0 = 0 -> blue (image 1) won
    assert _near(_pixel(pairs[0].winner), RED) and _near(_pixel(pairs[0].loser), BLUE)
    assert _near(_pixel(pairs[1].winner), BLUE) and _near(_pixel(pairs[1].loser), RED)
    assert pairs[1].raw_labels == (0.0, 1.0)
    provenance = pairs[1].provenance
    assert provenance["winner_model"] == "sd15" and provenance["loser_model"] == "sdxl"
    assert provenance["winner_uid"] == "uid1_1" and provenance["best_image_uid"] == "uid1_1"
    assert provenance["user_id"] == 7 and provenance["ranking_id"] == 1001
    assert provenance["created_at"].startswith("2023-05-01") and provenance["file"] == str(v2_parquet)
    assert pairs[1].row_id == "v2.parquet:1" and pairs[1].source == "pickapic"


def test_full_image_check_catches_truncation_and_ties_can_be_kept(v2_parquet):
    report = ReadReport()
    pairs = list(iter_pairs(_data(v2_parquet, "data.check_images=full", "data.drop_ties=false"), report))
    assert [p.prompt for p in pairs] == ["prompt 0", "prompt 1", "prompt 2", "prompt 11"]
    assert report.dropped["corrupt image"] == 2 and report.examples["corrupt image"] == [
        "v2.parquet:7",
        "v2.parquet:10",
    ]
    assert "tie" not in report.dropped
    assert pairs[2].raw_labels == (0.5, 0.5)  # a kept tie keeps image 0 first


@pytest.mark.parametrize(
    ("row", "message"),
    [
        (v2_row(0, 0.7, label_1=0.3), r"v2.parquet, row 1: label_0 outside \{0, 0.5, 1\}"),
        (v2_row(0, 1.0, caption=""), r"v2.parquet, row 1: empty caption"),
        (v2_row(0, 1.0, jpg_0=b"garbage"), r"v2.parquet, row 1: corrupt image \(winner: cannot decode image"),
    ],
)
def test_strict_mode_names_file_and_row(tmp_path, row, message):
    path = write_parquet(tmp_path / "v2.parquet", [v2_row(9, 0.5), row])  # the tie is a policy drop, not an error
    with pytest.raises(DataError, match=message):
        list(iter_pairs(_data(path, "data.strict=true"), ReadReport()))


def test_missing_column_is_counted_or_named(tmp_path):
    write_parquet(tmp_path / "shards" / "a.parquet", [v2_row(0, 1.0)])
    bad = write_parquet(tmp_path / "shards" / "b.parquet", [{"caption": "x", "jpg_0": jpeg(RED), "label_0": 1.0}] * 3)
    report = ReadReport()
    assert [p.prompt for p in iter_pairs(_data(tmp_path / "shards"), report)] == ["prompt 0"]
    assert report.dropped == {"missing required column(s) jpg_1": 3}
    assert report.examples["missing required column(s) jpg_1"] == ["b.parquet:*"]
    with pytest.raises(DataError, match=r"b.parquet: missing required column\(s\) jpg_1"):
        list(iter_pairs(_data(tmp_path / "shards", "data.strict=true"), ReadReport()))
    with pytest.raises(DataError, match="no usable pairs"):
        from prefdiff.data.dataset import load_pairs

        load_pairs(_data(bad))


def test_directory_of_shards_split_filter_and_missing_path(tmp_path):
    for name in ("train-00001-of-00002", "train-00000-of-00002", "validation-00000-of-00001"):
        write_parquet(tmp_path / "hub" / "data" / f"{name}.parquet", [v2_row(0, 1.0, caption=name)])
    prompts = [p.prompt for p in iter_pairs(_data(tmp_path / "hub"), ReadReport())]
    assert prompts == ["train-00000-of-00002", "train-00001-of-00002"]
    prompts = [p.prompt for p in iter_pairs(_data(tmp_path / "hub", "data.split=validation"), ReadReport())]
    assert prompts == ["validation-00000-of-00001"]
    with pytest.raises(DataError, match="not found"):
        list(read_pickapic(tmp_path / "nope.parquet"))


def test_saved_datasets_dir_reads_like_the_parquet(tmp_path, v2_parquet):
    rows = _v2_rows()
    saved = write_saved_datasets_dir(tmp_path / "saved", [rows[:7], rows[7:]], batch_rows=3)
    from_arrow, from_parquet = ReadReport(), ReadReport()
    arrow_pairs = list(iter_pairs(_data(saved), from_arrow))
    parquet_pairs = list(iter_pairs(_data(v2_parquet), from_parquet))
    assert [(p.prompt, p.winner, p.loser) for p in arrow_pairs] == [
        (p.prompt, p.winner, p.loser) for p in parquet_pairs
    ]
    assert from_arrow.dropped == from_parquet.dropped
    assert arrow_pairs[2].row_id == "data-00001-of-00002.arrow:3"  # prompt 10: row 3 of the second file
    # a DatasetDict: splits in sub-directories
    (tmp_path / "dd").mkdir()
    saved.rename(tmp_path / "dd" / "train")
    (tmp_path / "dd" / "dataset_dict.json").write_text(json.dumps({"splits": ["train"]}))
    assert len(list(iter_pairs(_data(tmp_path / "dd"), ReadReport()))) == 4
    with pytest.raises(DataError, match="no split 'test'"):
        list(iter_pairs(_data(tmp_path / "dd", "data.split=test"), ReadReport()))


def test_read_pickapic_keeps_its_signature(v2_parquet):
    report = ReadReport()
    assert len(list(read_pickapic(v2_parquet, report=report))) == 4 and report.dropped["tie"] == 1
    assert len(list(read_pickapic(v2_parquet, drop_ties=False))) == 5


def test_max_pairs_stops_early(v2_parquet):
    report = ReadReport()
    assert [p.prompt for p in iter_pairs(_data(v2_parquet, "data.max_pairs=2"), report)] == ["prompt 0", "prompt 1"]
    assert report.stopped_at_max_pairs and "stopped at data.max_pairs" in report.summary()


def test_corrupt_image_error_names_the_row():
    with pytest.raises(ValueError, match="row 7 winner: cannot decode"):
        open_image(b"not an image", "row 7 winner")


def test_one_crop_and_one_flip_for_both_images():
    """A left-red/right-blue winner and the same loser: after a shared flip both start blue."""
    half = Image.new("RGB", (48, 32), (255, 0, 0))
    half.paste((0, 0, 255), (24, 0, 48, 32))
    flips = 0
    for seed in range(8):
        gen = torch.Generator().manual_seed(seed)
        w, l_ = transform_pair(half, half.copy(), 32, center_crop=False, random_flip=True, generator=gen)
        assert torch.equal(w.pixels, l_.pixels)
        assert w.crop_top_left == l_.crop_top_left
        assert w.original_size == (32, 48)
        flips += int(w.pixels[2, 0, 0] > 0)  # blue at the left edge: flipped
    assert 0 < flips < 8


def test_unreadable_files_and_row_groups_are_counted_or_named(tmp_path):
    shards = tmp_path / "shards"
    rows = [v2_row(i, 1.0) for i in range(12)]
    damaged = damage_row_group(
        write_parquet(shards / "a.parquet", rows, row_group_size=4), row_group=1, column=V2_COLUMNS.index("jpg_0")
    )
    (shards / "b.parquet").write_bytes(b"PAR1 this is not parquet")
    report = ReadReport()
    pairs = list(iter_pairs(_data(shards), report))
    assert [p.prompt for p in pairs] == [f"prompt {i}" for i in (0, 1, 2, 3, 8, 9, 10, 11)]
    assert report.dropped == {"unreadable row group": 4, "unreadable file": 1}
    assert report.examples == {"unreadable row group": ["a.parquet:4-7"], "unreadable file": ["b.parquet:*"]}
    with pytest.raises(DataError, match=r"a.parquet: cannot read rows 4-7"):
        list(iter_pairs(_data(damaged, "data.strict=true"), ReadReport()))
    with pytest.raises(DataError, match=r"b.parquet: cannot read the file's schema"):
        list(iter_pairs(_data(shards / "b.parquet", "data.strict=true"), ReadReport()))


def test_arrow_ipc_file_format_is_read_too(tmp_path):
    import pyarrow as pa

    table = pa.Table.from_pylist([v2_row(i, 0.0) for i in range(5)])
    path = tmp_path / "pairs.arrow"
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table, max_chunksize=2)
    pairs = list(iter_pairs(_data(path), ReadReport()))
    assert [p.provenance["winner_uid"] for p in pairs] == [f"uid{i}_1" for i in range(5)]
