"""What the latent cache buys: cache build pairs/s, and DPO-LoRA training pairs/s from the cache
against decoding JPEGs and running the VAE and text encoder on the fly, side by side.

    python benchmarks/bench_cache.py [--sizes 64 256] [--pairs 64] [--steps 4] [--rounds 3]

For each image size a Pick-a-Pic-format parquet of drawn shapes is written, a cache is built
with the tiny pipeline's VAE and text encoder (timed), then the two data paths are timed in
interleaved rounds through the real DataLoader, step (`micro_batch_loss`), backward and optimizer.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


def _setup(source: str, model: Path, data_path: Path, size: int, batch: int):
    from torch.utils.data import DataLoader

    from prefdiff.config import load_config
    from prefdiff.data.dataset import SlotBatchSampler
    from prefdiff.models import load_backbone
    from prefdiff.train.components import build_components, build_pair_data
    from prefdiff.train.optim import build_optimizer
    from prefdiff.train.step import StepContext

    torch.manual_seed(0)
    config = load_config(
        None,
        [
            f"model.path={model}",
            f"data.path={data_path}",
            f"data.resolution={size}",
            "lora.rank=8",
            "lora.alpha=8",
            "optim.lr=1e-5",
        ],
    )
    components = build_components(config, load_backbone(model))
    backbone, strategy = components.backbone, components.strategy
    params = strategy.prepare(backbone, torch.device("cpu"), torch.float32)
    stream, collate = build_pair_data(config.data, 0, backbone)  # the cache when data_path is one
    assert (source == "cache") == (collate.__name__ == "collate_cached")
    loader = iter(DataLoader(stream, batch_sampler=SlotBatchSampler(0, batch), collate_fn=collate))
    optimizer = build_optimizer(params, config.optim)
    reference = strategy.reference(backbone, torch.float32, nullcontext)
    ctx = StepContext(backbone, components.objective, reference, 0, size, torch.device("cpu"))
    return ctx, backbone.denoiser, optimizer, loader


def _steps(state, count: int) -> None:
    from prefdiff.train.step import micro_batch_loss

    ctx, denoiser, optimizer, loader = state
    for _ in range(count):
        out = micro_batch_loss(ctx, denoiser, next(loader))
        out.loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--pairs", type=int, default=64, help="pairs in the generated dataset")
    parser.add_argument("--batch", type=int, default=4, help="pairs per training step")
    parser.add_argument("--steps", type=int, default=4, help="steps per timed round")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    from prefdiff.config import load_config
    from prefdiff.data.cache import CacheSettings, build_cache, finish_cache
    from prefdiff.models import load_backbone
    from prefdiff.models.tiny import build_tiny_pipeline
    from prefdiff.toy.synthetic import write_shapes_parquet

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model = build_tiny_pipeline(root / "tiny", "sd")
        for size in args.sizes:
            parquet = write_shapes_parquet(
                root / f"shapes{size}.parquet", num_rows=args.pairs, size=size, tie_fraction=0.0
            )
            data = load_config(None, [f"data.path={parquet}", f"data.resolution={size}"]).data
            backbone = load_backbone(model)
            start = time.perf_counter()
            identity = build_cache(
                backbone, data, root / f"cache{size}", CacheSettings(resolution=size, batch_size=16), progress=False
            )
            info = finish_cache(root / f"cache{size}", identity)
            build_rate = info["num_pairs"] / (time.perf_counter() - start)

            states = {
                "cache": _setup("cache", model, root / f"cache{size}", size, args.batch),
                "on the fly": _setup("live", model, parquet, size, args.batch),
            }
            for state in states.values():
                _steps(state, 1)  # warm-up
            seconds = {name: [] for name in states}
            for _ in range(args.rounds):
                for name, state in states.items():
                    start = time.perf_counter()
                    _steps(state, args.steps)
                    seconds[name].append((time.perf_counter() - start) / args.steps)
            per_step = {name: sorted(v)[len(v) // 2] for name, v in seconds.items()}
            rows.append((size, build_rate, per_step))

    print(f"tiny pipeline, DPO-LoRA, {args.batch} pairs per step, CPU threads {torch.get_num_threads()}")
    print(f"{'px':>5} {'cache build pairs/s':>20} {'cached pairs/s':>15} {'on-the-fly pairs/s':>19} {'speed-up':>9}")
    for size, build_rate, per_step in rows:
        cached, live = args.batch / per_step["cache"], args.batch / per_step["on the fly"]
        print(f"{size:>5} {build_rate:>20.1f} {cached:>15.2f} {live:>19.2f} {cached / live:>8.2f}x")


if __name__ == "__main__":
    main()
