"""Generated preference datasets for the data tests (no network, a few KB each).

Every image is a flat colour, so a decoded pixel says which image it was.
"""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

V2_COLUMNS = (
    "are_different best_image_uid caption created_at has_label image_0_uid image_0_url image_1_uid "
    "image_1_url jpg_0 jpg_1 label_0 label_1 model_0 model_1 ranking_id user_id num_example_per_prompt"
).split()

RED, GREEN, BLUE = (255, 0, 0), (0, 255, 0), (0, 0, 255)


def jpeg(colour: tuple[int, int, int], size: tuple[int, int] = (24, 16)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


def truncated_jpeg() -> bytes:
    """A JPEG cut off in its scan data: its header parses, decoding it fails."""
    import numpy as np

    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(noise).save(buffer, format="JPEG", quality=90)
    data = buffer.getvalue()
    return data[: len(data) * 3 // 4]


def colour_of(index: int) -> tuple[int, int, int]:
    """A distinct, JPEG-stable colour per index (< 64)."""
    return (64 * (index % 4) + 20, 64 * (index // 4 % 4) + 20, 64 * (index // 16 % 4) + 20)


def v2_row(index: int, label_0: float, **changes: object) -> dict:
    """One Pick-a-Pic v2 row: image 0 is red, image 1 blue; provenance fields name the index."""
    row = {
        "are_different": True,
        "best_image_uid": f"uid{index}_{0 if label_0 >= 0.5 else 1}",
        "caption": f"prompt {index}",
        "created_at": datetime(2023, 5, 1, 12, index % 60, tzinfo=UTC),
        "has_label": True,
        "image_0_uid": f"uid{index}_0",
        "image_0_url": f"https://example.invalid/{index}_0.jpg",
        "image_1_uid": f"uid{index}_1",
        "image_1_url": f"https://example.invalid/{index}_1.jpg",
        "jpg_0": jpeg(RED),
        "jpg_1": jpeg(BLUE),
        "label_0": label_0,
        "label_1": 1.0 - label_0,
        "model_0": "sdxl",
        "model_1": "sd15",
        "ranking_id": 1000 + index,
        "user_id": 7,
        "num_example_per_prompt": 1,
    }
    row.update(changes)
    return row


def v2_table(rows: list[dict]) -> pa.Table:
    return pa.Table.from_pylist(rows)


def write_parquet(path: Path, rows: list[dict], row_group_size: int | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=row_group_size)
    return path


def write_saved_datasets_dir(path: Path, shards: list[list[dict]], batch_rows: int = 2) -> Path:
    """What ``datasets.Dataset.save_to_disk`` writes: Arrow IPC *stream* files, state.json and
    dataset_info.json."""
    path.mkdir(parents=True, exist_ok=True)
    files = []
    for index, rows in enumerate(shards):
        name = f"data-{index:05d}-of-{len(shards):05d}.arrow"
        table = pa.Table.from_pylist(rows)
        with pa.OSFile(str(path / name), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as writer:
            for batch in table.to_batches(max_chunksize=batch_rows):
                writer.write_batch(batch)
        files.append({"filename": name})
    (path / "state.json").write_text(json.dumps({"_data_files": files, "_fingerprint": "0", "_split": "train"}))
    (path / "dataset_info.json").write_text(json.dumps({"features": {}}))
    return path


def write_pair_folder(path: Path, rows: list[dict]) -> Path:
    """``path/pairs.jsonl`` plus the images it names (``images/<name>.jpg``, flat colours)."""
    (path / "images").mkdir(parents=True, exist_ok=True)
    lines = []
    for row in rows:
        for key in ("chosen", "rejected"):
            value = row.get(key) if isinstance(row, dict) else None
            if isinstance(value, tuple):  # (file name, colour) -> write it, store the relative path
                (path / "images" / value[0]).write_bytes(jpeg(value[1]))
                row = {**row, key: f"images/{value[0]}"}
        lines.append(json.dumps(row) if isinstance(row, dict) else row)
    (path / "pairs.jsonl").write_text("\n".join(lines) + "\n")
    return path


def streaming_parquet(path: Path, num_rows: int, files: int = 3, row_group_size: int = 8, tie_every: int = 0) -> Path:
    """``files`` parquet shards of ``num_rows`` rows in all; the winner of row i has colour i % 64
    and the prompt "p{i}"; every ``tie_every``-th row is a tie."""
    path.mkdir(parents=True, exist_ok=True)
    per_file = -(-num_rows // files)
    for f in range(files):
        rows = []
        for i in range(f * per_file, min(num_rows, (f + 1) * per_file)):
            tie = tie_every and i % tie_every == tie_every - 1
            winner_first = i % 2 == 0
            won, lost = jpeg(colour_of(i % 64), (16, 16)), jpeg((0, 0, 0), (16, 16))
            rows.append(
                {
                    "caption": f"p{i}",
                    "jpg_0": won if winner_first else lost,
                    "jpg_1": lost if winner_first else won,
                    "label_0": 0.5 if tie else (1.0 if winner_first else 0.0),
                }
            )
        write_parquet(path / f"train-{f:05d}-of-{files:05d}.parquet", rows, row_group_size)
    return path


def damage_row_group(path: Path, row_group: int, column: int) -> Path:
    """Overwrite one column chunk's pages (snappy-compressed) of ``row_group`` with junk: its
    other columns still read, that one fails."""
    meta = pq.ParquetFile(path).metadata.row_group(row_group).column(column)
    data = bytearray(path.read_bytes())
    start, size = meta.data_page_offset, meta.total_compressed_size
    data[start + 5 : start + size - 5] = b"\x07" * (size - 10)
    path.write_bytes(bytes(data))
    return path
