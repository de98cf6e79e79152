"""Peak resident memory while streaming preference pairs: it must not grow with the dataset.

    python benchmarks/bench_stream_memory.py [--sizes 10000 100000] [--shards 8]
                                             [--shuffle-buffer 1024] [--image 32] [--in-memory]

For each size, generates Pick-a-Pic-style parquet shards of unique noise JPEGs (``--image`` px,
incompressible, no dictionary encoding: the files really grow with the row count), then, in a
fresh subprocess per size and mode, builds the trainer's stream (``build_pair_stream``) and reads
one full epoch through a DataLoader, as training does (decode, crop, flip, collate). The current
RSS (``/proc/self/statm``) is sampled every 2 ms in a thread; the figure is the peak growth over
the RSS after the imports. ``--in-memory`` also measures the in-memory path for contrast.
"""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from prefdiff.rss import RssSampler


def generate(out: Path, num_pairs: int, shards: int, image: int, row_group: int) -> Path:
    """``shards`` parquet files holding ``num_pairs`` rows of two unique noise JPEGs each."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq
    from PIL import Image

    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(num_pairs)
    per_shard = -(-num_pairs // shards)

    def encode() -> bytes:
        buffer = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (image, image, 3), dtype=np.uint8)).save(buffer, format="JPEG", quality=90)
        return buffer.getvalue()

    for shard in range(shards):
        rows = range(shard * per_shard, min(num_pairs, (shard + 1) * per_shard))
        table = pa.table(
            {
                "caption": [f"prompt {i}" for i in rows],
                "jpg_0": [encode() for _ in rows],
                "jpg_1": [encode() for _ in rows],
                "label_0": [float(i % 2) for i in rows],
                "label_1": [float(1 - i % 2) for i in rows],
            }
        )
        pq.write_table(
            table,
            out / f"train-{shard:05d}-of-{shards:05d}.parquet",
            row_group_size=row_group,
            use_dictionary=False,
            compression="none",
        )
    return out


def child(args: argparse.Namespace) -> None:
    """One measurement in this (fresh) process; prints a JSON line."""
    import torch
    from torch.utils.data import DataLoader

    from prefdiff.config import load_config
    from prefdiff.data.dataset import SlotBatchSampler, build_pair_stream, collate_pairs

    torch.set_num_threads(1)
    overrides = [
        f"data.path={args.data}",
        f"data.resolution={args.image}",
        f"data.shuffle_buffer={args.shuffle_buffer}",
        f"data.streaming={'true' if args.mode == 'streaming' else 'false'}",
        "data.random_flip=true",
    ]
    config = load_config(None, overrides).data
    sampler = RssSampler()
    started = time.perf_counter()
    stream = build_pair_stream(config, seed=0)
    built = time.perf_counter()
    loader = DataLoader(stream, batch_sampler=SlotBatchSampler(0, args.batch), collate_fn=collate_pairs, num_workers=0)
    seen = 0
    for batch in loader:
        seen += len(batch["slots"])
        if seen >= len(stream):
            break
    done = time.perf_counter()
    peak = sampler.stop()
    print(
        json.dumps(
            {
                "mode": args.mode,
                "pairs": len(stream),
                "peak_rss_growth_mib": peak / 2**20,
                "build_s": built - started,
                "epoch_s": done - built,
                "pairs_per_s": seen / (done - built),
            }
        )
    )


def measure(data: Path, mode: str, args: argparse.Namespace) -> dict:
    command = [
        sys.executable,
        __file__,
        "--child",
        "--mode",
        mode,
        "--data",
        str(data),
        "--image",
        str(args.image),
        "--shuffle-buffer",
        str(args.shuffle_buffer),
        "--batch",
        str(args.batch),
    ]
    out = subprocess.run(command, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--shards", type=int, default=8)
    parser.add_argument("--row-group", type=int, default=256)
    parser.add_argument("--shuffle-buffer", type=int, default=1024)
    parser.add_argument("--image", type=int, default=32)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--in-memory", action="store_true", help="also measure the in-memory path")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--mode", default="streaming", help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    results = []
    with tempfile.TemporaryDirectory(prefix="bench_stream_") as tmp:
        for size in args.sizes:
            data = generate(Path(tmp) / f"pairs_{size}", size, args.shards, args.image, args.row_group)
            mib = sum(f.stat().st_size for f in data.iterdir()) / 2**20
            for mode in ("streaming", "in_memory") if args.in_memory else ("streaming",):
                result = {**measure(data, mode, args), "data_mib": mib}
                results.append(result)
                print(json.dumps(result), flush=True)
    for mode in ("streaming", "in_memory"):
        rows = [r for r in results if r["mode"] == mode]
        if len(rows) >= 2:
            ratio = rows[-1]["peak_rss_growth_mib"] / rows[0]["peak_rss_growth_mib"]
            print(
                f"{mode}: peak RSS growth {rows[0]['peak_rss_growth_mib']:.1f} MiB at {rows[0]['pairs']} pairs, "
                f"{rows[-1]['peak_rss_growth_mib']:.1f} MiB at {rows[-1]['pairs']} pairs (ratio {ratio:.2f})"
            )


if __name__ == "__main__":
    main()
