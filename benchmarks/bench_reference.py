"""What computing the reference once buys, side by side in one process on the tiny SD pipeline:

1. a beta sweep: four live DPO runs against one `prefdiff reference` pass plus four cached runs;
2. the reference pass's pairs/s against the in-loop reference forward (micro-batches of the
   run's size, as the live reference runs);
3. with --compile, train.compile on against off: the first step (compilation) and the rest.

    python benchmarks/bench_reference.py [--steps 30] [--batch 4] [--betas 250 500 1000 2000] [--compile]

Runs train from a latent cache of drawn-shape pairs (built once, not timed), LoRA rank 8, fp32.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")


def run_config(model: Path, data: Path, out: Path, steps: int, batch: int, *overrides: str) -> Any:
    from prefdiff.config import load_config

    return load_config(
        None,
        [
            f"model.path={model}",
            f"data.path={data}",
            f"output_dir={out}",
            "data.resolution=32",
            f"train.max_steps={steps}",
            f"train.batch_size={batch}",
            "train.checkpoint_every=0",
            "train.report_to=none",
            "optim.lr=1e-4",
            *overrides,
        ],
    )


def timed(work: Any) -> float:
    start = time.perf_counter()
    work()
    return time.perf_counter() - start


def in_loop_reference_pairs_per_second(config: Any, micro_batches: int) -> float:
    """The live reference's own forward, as the loop runs it: one no-grad pass over the
    ``[winners; losers]`` of each micro-batch."""
    import torch

    from prefdiff.train.components import build_components, build_pair_data
    from prefdiff.train.reference import ModuleReference

    backbone = build_components(config).backbone
    stream, collate = build_pair_data(config.data, config.train.seed, backbone)
    reference = ModuleReference(backbone.denoiser)
    batch = config.train.batch_size
    problems = [
        backbone.denoising_problem(
            collate([stream[s] for s in range(k * batch, (k + 1) * batch)]), 0, 32, torch.device("cpu")
        )
        for k in range(micro_batches)
    ]
    reference.errors(backbone, problems[0])  # warm-up
    seconds = timed(lambda: [reference.errors(backbone, p) for p in problems])
    return micro_batches * batch / seconds


def main() -> None:
    from prefdiff.data.cache import CacheSettings, build_cache, finish_cache
    from prefdiff.models import load_backbone
    from prefdiff.models.tiny import build_tiny_pipeline
    from prefdiff.toy.synthetic import write_shapes_parquet
    from prefdiff.train.loop import train
    from prefdiff.train.reference_cache import compute_reference

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--betas", nargs="+", type=float, default=[250, 500, 1000, 2000])
    parser.add_argument("--pass-batch", type=int, default=32, help="pairs per forward of the reference pass")
    parser.add_argument("--compile", action="store_true", help="also time train.compile (minutes on CPU)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    results: dict[str, Any] = {"args": vars(args) | {"json": str(args.json)}}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model = build_tiny_pipeline(root / "tiny", "sd")
        parquet = write_shapes_parquet(root / "shapes.parquet", num_rows=256, size=32, seed=0)
        cache_config = run_config(model, parquet, root / "unused", 1, 1)
        settings = CacheSettings(resolution=32, flip_copies=False)
        finish_cache(root / "cache", build_cache(load_backbone(model), cache_config.data, root / "cache", settings))
        data = root / "cache"

        live = [
            timed(
                lambda b=b: train(
                    run_config(model, data, root / f"live_{b:g}", args.steps, args.batch, f"objective.beta={b}")
                )
            )
            for b in args.betas
        ]
        reference_config = run_config(model, data, root / "ref_run", args.steps, args.batch)
        pass_seconds = timed(lambda: compute_reference(reference_config, root / "ref", args.pass_batch, progress=False))
        cached = [
            timed(
                lambda b=b: train(
                    run_config(
                        model,
                        data,
                        root / f"cached_{b:g}",
                        args.steps,
                        args.batch,
                        f"objective.beta={b}",
                        "reference.mode=cached",
                        f"reference.path={root / 'ref'}",
                    )  # fmt: skip
                )
            )
            for b in args.betas
        ]
        slots = args.steps * args.batch
        results["sweep"] = {
            "live_runs_s": live,
            "reference_pass_s": pass_seconds,
            "cached_runs_s": cached,
            "live_total_s": sum(live),
            "cached_total_s": pass_seconds + sum(cached),
            "ratio": (pass_seconds + sum(cached)) / sum(live),
        }
        results["reference_pass"] = {
            "pairs_per_s": slots / pass_seconds,
            "in_loop_pairs_per_s": in_loop_reference_pairs_per_second(reference_config, min(args.steps, 16)),
        }
        if args.compile:
            compiled = {}
            for flag in ("false", "true"):
                out = root / f"compile_{flag}"
                total = timed(lambda out=out, flag=flag: train(
                    run_config(model, data, out, args.steps, args.batch, f"train.compile={flag}")))  # fmt: skip
                first = json.loads((out / "metrics.jsonl").read_text().splitlines()[0]).get("first_step_seconds")
                compiled[flag] = {"total_s": total, "first_step_s": first}
            off, on = compiled["false"]["total_s"] / args.steps, compiled["true"]
            steady_on = (on["total_s"] - on["first_step_s"]) / (args.steps - 1)
            results["compile"] = {**compiled, "steady_step_s_off": off, "steady_step_s_on": steady_on}
    sweep, passing = results["sweep"], results["reference_pass"]
    print(f"{len(args.betas)}-point beta sweep, {args.steps} steps of {args.batch} pairs each:")
    print(f"  live: {sweep['live_total_s']:.1f} s ({', '.join(f'{s:.1f}' for s in live)})")
    print(
        f"  cached: {sweep['cached_total_s']:.1f} s (reference pass {pass_seconds:.1f} s + "
        f"{', '.join(f'{s:.1f}' for s in cached)}): {sweep['ratio']:.2f}x the live sweep"
    )
    print(
        f"reference pass: {passing['pairs_per_s']:.1f} pairs/s (batches of {args.pass_batch}); in-loop reference "
        f"forward: {passing['in_loop_pairs_per_s']:.1f} pairs/s (batches of {args.batch})"
    )
    if "compile" in results:
        c = results["compile"]
        print(
            f"train.compile: first step {c['true']['first_step_s']:.1f} s; "
            f"steady step {c['steady_step_s_on'] * 1000:.0f} ms against "
            f"{c['steady_step_s_off'] * 1000:.0f} ms uncompiled"
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
