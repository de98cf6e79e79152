"""`prefdiff quickstart`: the whole loop on a laptop CPU in about a minute.

tiny pipeline -> a small Pick-a-Pic-format parquet of drawn shapes -> a latent cache ->
Diffusion-DPO with LoRA -> images from the base and the tuned model. Each stage is reused when its output exists.
(The toy-world issue replaces the random-init base with a pretrained one and adds raters,
evaluation and a report.)
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import typer

from prefdiff.config import load_config, merge_into, parse_overrides

QUICKSTART_RECIPE = {
    "lora": {"rank": 8, "alpha": 8.0},
    "data": {"resolution": 64, "random_flip": True},
    "objective": {"name": "dpo", "beta": 1000.0},
    "optim": {"lr": 1e-3, "warmup_steps": 10},
    "train": {
        "max_steps": 300,
        "batch_size": 4,
        "checkpoint_every": 100,
        "report_to": "tensorboard",
        "validation_prompts": ["a red circle", "a blue square"],
        "validation_seeds": [0, 1],
        "validation_steps": 10,
    },
}


def _implicit_accuracy_trend(metrics_file: Path, window: int = 50) -> tuple[float, float]:
    rows = [json.loads(line) for line in metrics_file.read_text().splitlines() if line.strip()]
    rows = [r for r in rows if "implicit_acc" in r]  # SFT logs none
    if not rows:
        return float("nan"), float("nan")
    first = [r["implicit_acc"] for r in rows[:window]]
    last = [r["implicit_acc"] for r in rows[-window:]]
    return sum(first) / len(first), sum(last) / len(last)


def run_quickstart(out: Path, overrides: list[str]) -> dict:
    from prefdiff.data.cache import INFO_FILE, CacheSettings, build_cache, finish_cache
    from prefdiff.evaluate.generate import generate_pngs
    from prefdiff.models import load_backbone
    from prefdiff.models.tiny import build_tiny_pipeline
    from prefdiff.toy.synthetic import write_shapes_parquet
    from prefdiff.train.checkpoint import list_checkpoints
    from prefdiff.train.loop import train

    out.mkdir(parents=True, exist_ok=True)
    seconds: dict[str, float] = {}

    start = time.perf_counter()
    base = out / "base"
    if not (base / "model_index.json").exists():
        typer.echo(f"[1/5] building a tiny random-init SD pipeline in {base}")
        build_tiny_pipeline(base, "sd")
    seconds["pipeline"] = time.perf_counter() - start

    start = time.perf_counter()
    data = out / "data" / "shapes.parquet"
    if not data.exists():
        typer.echo(f"[2/5] writing a Pick-a-Pic-format parquet of drawn shapes to {data}")
        write_shapes_parquet(data, num_rows=256, size=64)
    seconds["data"] = time.perf_counter() - start

    config = load_config()
    merge_into(config, QUICKSTART_RECIPE)
    merge_into(config, {"model": {"path": str(base)}, "data": {"path": str(data)}, "output_dir": str(out / "dpo")})
    merge_into(config, parse_overrides(overrides))

    start = time.perf_counter()
    cache_dir = out / "cache"
    if not (cache_dir / INFO_FILE).exists():
        typer.echo(f"[3/5] encoding every pair once (VAE latents, text conditioning) -> {cache_dir}")
        settings = CacheSettings(resolution=config.data.resolution, flip_copies=config.data.random_flip)
        finish_cache(cache_dir, build_cache(load_backbone(base), config.data, cache_dir, settings))
    seconds["cache"] = time.perf_counter() - start
    merge_into(config, {"data": {"path": str(cache_dir)}})
    run_dir = Path(config.output_dir)
    start = time.perf_counter()
    if not (run_dir / "lora" / "pytorch_lora_weights.safetensors").exists():
        typer.echo(f"[4/5] Diffusion-DPO with LoRA for {config.train.max_steps} steps -> {run_dir}")
        train(config, resume="latest" if list_checkpoints(run_dir) else None)
    seconds["train"] = time.perf_counter() - start

    start = time.perf_counter()
    samples = out / "samples"
    prompts = config.train.validation_prompts or ["a red circle"]
    typer.echo(f"[5/5] paired samples from the base and the tuned model -> {samples}")
    generate_pngs(base, prompts, [0, 1, 2, 3], samples / "base", steps=10, resolution=config.data.resolution)
    generate_pngs(base, prompts, [0, 1, 2, 3], samples / "dpo", lora=run_dir / "lora", steps=10, resolution=config.data.resolution)
    seconds["generate"] = time.perf_counter() - start

    acc_first, acc_last = _implicit_accuracy_trend(run_dir / "metrics.jsonl")
    summary = {
        "run_dir": str(run_dir),
        "lora": str(run_dir / "lora"),
        "samples": str(samples),
        "implicit_acc_first_50_steps": acc_first,
        "implicit_acc_last_50_steps": acc_last,
        "stage_seconds": seconds,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    typer.echo(
        f"implicit reward accuracy on training pairs: {acc_first:.2f} (first 50 steps) -> {acc_last:.2f} (last 50)\n"
        f"LoRA weights: {run_dir / 'lora'}\nsamples: {samples}/base vs {samples}/dpo\n"
        f"TensorBoard: tensorboard --logdir {run_dir / 'logs'}\nsummary: {out / 'summary.json'}"
    )
    return summary
