"""prefdiff.pickapic_parquet: rows written in Pick-a-Pic's conventions come back from prefdiff's
own reader winner first, in the row groups asked for, with only the columns asked for."""

from __future__ import annotations

import io
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from PIL import Image

from prefdiff.data import read_pickapic
from prefdiff.pickapic_parquet import (
    PICKAPIC_COLUMNS,
    PickapicRow,
    image_uid,
    write_pickapic_parquet,
)


def png(shade: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (4, 4), (shade, 0, 0)).save(buffer, format="PNG")
    return buffer.getvalue()


def rows(labels: list[float]) -> list[PickapicRow]:
    return [
        PickapicRow(
            f"prompt {i}", png(2 * i), png(2 * i + 1), label, ranking_id=i, image_0_uid=f"a{i}", image_1_uid=f"b{i}"
        )
        for i, label in enumerate(labels)
    ]


def test_the_reader_gets_the_winner_first_and_drops_ties(tmp_path: Path) -> None:
    path = tmp_path / "pairs.parquet"
    assert write_pickapic_parquet(path, rows([1.0, 0.0, 0.5])) == 3
    pairs = list(read_pickapic(path))
    assert [pair.prompt for pair in pairs] == ["prompt 0", "prompt 1"]
    assert (pairs[0].winner, pairs[1].winner) == (png(0), png(3))
    table = pq.read_table(path)
    assert table.column_names == list(PICKAPIC_COLUMNS)
    assert table.column("best_image_uid").to_pylist() == ["a0", "b1", ""]
    assert table.column("label_1").to_pylist() == [0.0, 1.0, 0.5]


def test_columns_and_row_groups_are_the_callers(tmp_path: Path) -> None:
    path = tmp_path / "pairs.parquet"
    columns = ("caption", "jpg_0", "jpg_1", "label_0", "score_0")
    lazy = (
        PickapicRow(r.caption, r.jpg_0, r.jpg_1, r.label_0, r.ranking_id, extra={"score_0": 0.25})
        for r in rows([1.0] * 5)
    )
    write_pickapic_parquet(path, lazy, columns, rows_per_group=2)
    file = pq.ParquetFile(path)
    assert file.num_row_groups == 3 and file.metadata.num_rows == 5
    assert file.schema_arrow.names == list(columns)
    assert pq.read_table(path).column("score_0").to_pylist() == [0.25] * 5


def test_no_rows_still_writes_the_schema_and_unknown_columns_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "empty.parquet"
    assert write_pickapic_parquet(path, [], rows_per_group=8) == 0
    assert pq.read_table(path).num_rows == 0 and pq.read_table(path).column_names == list(PICKAPIC_COLUMNS)
    with pytest.raises(ValueError, match="not Pick-a-Pic columns: \\['jpeg_0'\\]"):
        write_pickapic_parquet(tmp_path / "bad.parquet", [], ("caption", "jpeg_0"))


def test_image_uid_is_a_uuid_of_the_content() -> None:
    assert image_uid(b"x") == image_uid(b"x") != image_uid(b"y")
    assert len(image_uid(b"x")) == 36
