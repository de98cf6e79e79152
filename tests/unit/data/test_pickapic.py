import io

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from prefdiff.data import ReadReport, open_image, read_pickapic
from prefdiff.data.transforms import transform_pair
from prefdiff.errors import DataError


def _png(colour: tuple[int, int, int], size=(48, 32)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="PNG")
    return buffer.getvalue()


RED, BLUE = _png((255, 0, 0)), _png((0, 0, 255))


def _write(path, **columns):
    pq.write_table(pa.table(columns), path)
    return path


def test_winner_first_ties_and_unlabelled_dropped(tmp_path):
    path = _write(
        tmp_path / "pp.parquet",
        caption=["a", "b", "c", "d", "e"],
        jpg_0=[RED, RED, RED, RED, RED],
        jpg_1=[BLUE, BLUE, BLUE, BLUE, BLUE],
        label_0=[1.0, 0.0, 0.5, 1.0, 0.7],
        label_1=[0.0, 1.0, 0.5, 0.0, 0.3],
        has_label=[True, True, True, False, True],
    )
    report = ReadReport()
    pairs = list(read_pickapic(path, report=report))
    assert [p.prompt for p in pairs] == ["a", "b"]
    assert open_image(pairs[0].winner).getpixel((0, 0)) == (255, 0, 0)  # label_0 = 1: image 0 won
    assert open_image(pairs[1].winner).getpixel((0, 0)) == (0, 0, 255)  # label_0 = 0: image 1 won
    assert report.kept == 2
    assert report.dropped == {"tie": 1, "has_label is false": 1, "label_0 outside {0, 0.5, 1}": 1}
    assert "pp.parquet:2" in report.summary()
    with_ties = list(read_pickapic(path, drop_ties=False))
    assert [p.prompt for p in with_ties] == ["a", "b", "c"]


def test_missing_column_is_named(tmp_path):
    path = _write(tmp_path / "bad.parquet", caption=["a"], jpg_0=[RED], label_0=[1.0])
    with pytest.raises(DataError, match=r"bad.parquet: missing required column\(s\) jpg_1"):
        list(read_pickapic(path))


def test_directory_of_shards_and_missing_path(tmp_path):
    for i in range(2):
        _write(tmp_path / f"shard{i}.parquet", caption=[f"s{i}"], jpg_0=[RED], jpg_1=[BLUE], label_0=[1.0])
    assert [p.prompt for p in read_pickapic(tmp_path)] == ["s0", "s1"]
    with pytest.raises(DataError, match="not found"):
        list(read_pickapic(tmp_path / "nope.parquet"))


def test_corrupt_image_error_names_the_row():
    with pytest.raises(ValueError, match="row 7 winner: cannot decode"):
        open_image(b"not an image", "row 7 winner")


def test_one_crop_and_one_flip_for_both_images():
    """A left-red/right-blue winner and the same loser: after a shared flip both start blue."""
    half = Image.new("RGB", (48, 32), (255, 0, 0))
    half.paste((0, 0, 255), (24, 0, 48, 32))
    for seed in range(8):
        gen = torch.Generator().manual_seed(seed)
        w, l_ = transform_pair(half, half.copy(), 32, center_crop=False, random_flip=True, generator=gen)
        assert torch.equal(w.pixels, l_.pixels)
        assert w.crop_top_left == l_.crop_top_left
        assert w.original_size == (32, 48)
