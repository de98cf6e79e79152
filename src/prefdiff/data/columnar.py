"""Columnar files: parquet shards and Arrow IPC files (a saved Hugging Face ``datasets`` dir).

A file is read in *chunks*: parquet row groups, or Arrow record batches. Chunks are the unit of
random access for streaming: their row counts come from metadata (parquet footers, Arrow message
headers) and one chunk is read at a time, with only the columns asked for.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from prefdiff.errors import DataError

COLUMNAR_SUFFIXES = (".parquet", ".arrow")


@dataclass(frozen=True)
class Chunk:
    """Rows ``[first_row, first_row + num_rows)`` of ``file``: parquet row group or Arrow record
    batch number ``index``."""

    file: Path
    index: int
    first_row: int
    num_rows: int


def is_saved_datasets_dir(path: Path) -> bool:
    """A directory written by ``datasets``' ``save_to_disk`` (a Dataset or a DatasetDict)."""
    return path.is_dir() and any(
        (path / name).is_file() for name in ("dataset_info.json", "state.json", "dataset_dict.json")
    )


def saved_datasets_files(path: Path, split: str) -> list[Path]:
    """The ``*.arrow`` files of a ``save_to_disk`` directory, in the order ``state.json`` lists
    them; for a DatasetDict, those of ``split``."""
    dict_file = path / "dataset_dict.json"
    if dict_file.is_file():
        splits = json.loads(dict_file.read_text()).get("splits", [])
        if split not in splits:
            raise DataError(
                f"{path}: saved DatasetDict has no split {split!r} (splits: {', '.join(splits)}); set data.split"
            )
        return saved_datasets_files(path / split, split)
    state = path / "state.json"
    if state.is_file():
        names = [entry["filename"] for entry in json.loads(state.read_text()).get("_data_files", [])]
        files = [path / name for name in names]
        missing = [f.name for f in files if not f.is_file()]
        if missing:
            raise DataError(f"{state}: lists arrow files that are missing: {', '.join(missing)}")
        if files:
            return files
    files = sorted(path.glob("*.arrow"))
    if not files:
        raise DataError(f"{path}: a saved datasets directory without .arrow files")
    return files


def columnar_files(path: str | Path, split: str = "train") -> list[Path]:
    """The data files named by ``path``, in storage order.

    A ``.parquet`` or ``.arrow`` file; a ``save_to_disk`` directory; or a directory of parquet
    shards (searched recursively, sorted by path). When some shard names start with
    ``{split}-`` or lie under a folder named ``split`` (the Hugging Face hub layout,
    ``data/train-00000-of-00645.parquet``), only those are used.
    """
    path = Path(path)
    if path.is_file():
        if path.suffix not in COLUMNAR_SUFFIXES:
            raise DataError(f"{path}: expected a .parquet or .arrow file")
        return [path]
    if not path.exists():
        raise DataError(f"data path not found: {path}")
    if is_saved_datasets_dir(path):
        return saved_datasets_files(path, split)
    files = sorted(path.rglob("*.parquet"))
    if not files:
        files = sorted(path.glob("*.arrow"))
    if not files:
        raise DataError(f"{path}: no .parquet or .arrow files in this directory")
    in_split = [f for f in files if f.name.startswith(f"{split}-") or split in f.relative_to(path).parts[:-1]]
    return in_split or files


def _arrow_reader(file: Path) -> pa.ipc.RecordBatchStreamReader | pa.ipc.RecordBatchFileReader:
    """An Arrow reader over a memory map: bodies are not read until a column is touched."""
    source = pa.memory_map(str(file))
    try:
        return pa.ipc.open_stream(source)
    except pa.ArrowInvalid:
        source.seek(0)
        try:
            return pa.ipc.open_file(source)
        except pa.ArrowInvalid as err:
            raise DataError(f"{file}: not an Arrow IPC stream or file ({err})") from None


def _arrow_batches(file: Path) -> Iterator[pa.RecordBatch]:
    reader = _arrow_reader(file)
    if isinstance(reader, pa.ipc.RecordBatchFileReader):
        for i in range(reader.num_record_batches):
            yield reader.get_batch(i)
    else:
        yield from reader


def column_names(file: Path) -> list[str]:
    """Column names from the file's metadata."""
    try:
        if file.suffix == ".parquet":
            import pyarrow.parquet as pq

            return list(pq.ParquetFile(file).schema_arrow.names)
        return list(_arrow_reader(file).schema.names)
    except (OSError, pa.ArrowException) as err:
        raise DataError(f"{file}: cannot read the file's schema ({err})") from None


def file_chunks(file: Path) -> list[Chunk]:
    """The file's chunks, from metadata only."""
    sizes: list[int]
    if file.suffix == ".parquet":
        import pyarrow.parquet as pq

        metadata = pq.ParquetFile(file).metadata
        sizes = [metadata.row_group(i).num_rows for i in range(metadata.num_row_groups)]
    else:
        sizes = [batch.num_rows for batch in _arrow_batches(file)]
    chunks, first = [], 0
    for index, size in enumerate(sizes):
        chunks.append(Chunk(file, index, first, size))
        first += size
    return chunks


def read_chunks(file: Path, chunks: list[Chunk], columns: list[str]) -> Iterator[tuple[Chunk, list[dict] | DataError]]:
    """``(chunk, rows)`` for the given chunks of one file, in file order, opening it once.

    A chunk that cannot be read (a damaged row group or batch) comes with a :class:`DataError`
    naming the file and rows instead of its rows; the caller decides whether that is fatal.
    """
    wanted = {chunk.index: chunk for chunk in chunks}

    def error(chunk: Chunk, err: Exception) -> DataError:
        last = chunk.first_row + chunk.num_rows - 1
        return DataError(f"{file}: cannot read rows {chunk.first_row}-{last} ({err})")

    if file.suffix == ".parquet":
        import pyarrow.parquet as pq

        try:
            parquet = pq.ParquetFile(file)
        except (OSError, pa.ArrowException) as err:
            for index in sorted(wanted):
                yield wanted[index], error(wanted[index], err)
            return
        for index in sorted(wanted):
            try:
                rows = parquet.read_row_group(index, columns=columns).to_pylist()
            except (OSError, pa.ArrowException) as err:
                yield wanted[index], error(wanted[index], err)
                continue
            yield wanted[index], rows
        return
    done: set[int] = set()
    try:
        for index, batch in enumerate(_arrow_batches(file)):
            if index in wanted:
                done.add(index)
                yield wanted[index], batch.select(columns).to_pylist()
    except (OSError, pa.ArrowException, DataError) as err:  # a damaged stream: the rest is unreachable
        for index in sorted(set(wanted) - done):
            yield wanted[index], error(wanted[index], err)


def read_chunk(chunk: Chunk, columns: list[str]) -> list[dict] | DataError:
    """The chunk's rows as dicts holding only ``columns``, or the error that prevented it."""
    for _, rows in read_chunks(chunk.file, [chunk], columns):
        return rows
    return DataError(f"{chunk.file}: chunk {chunk.index} (rows from {chunk.first_row}) is gone; did the file change?")


def total_bytes(files: list[Path]) -> int:
    return sum(f.stat().st_size for f in files)
