"""Throughput and peak memory of one training step: DPO (LoRA and full) against SFT.

    python benchmarks/bench_train_step.py [--family sd|sd3|flux] [--unet tiny|small|sd15]
                                          [--transformer tiny|sd35_medium|flux_width] [--pairs B]
                                          [--steps N] [--device cpu|cuda] [--dtype fp32|bf16]

--family picks the backbone (the family's tiny pipeline); --unet (sd) or --transformer (sd3,
flux) swaps its denoiser for a random-init one of another size. The flow families' text
conditioning is synthetic, shaped by the transformer's config (77 CLIP + --t5-tokens for SD3,
--t5-tokens for FLUX), so a full-size transformer needs no full-size text encoders.

Every mode is built by `build_components` and runs the real step (`micro_batch_loss` + backward + optimizer)
on cached latents and text conditioning, so the VAE and the text encoder are out of the timing,
as they are when training from a cache. Modes are timed in interleaved rounds inside one process
(side by side), then each mode's peak memory is measured in a fresh subprocess (peak RSS growth
over the imports on CPU, torch.cuda.max_memory_allocated on GPU).

Modes, all over the same 2B images:
  dpo_lora  B pairs, policy fwd+bwd on [w; l] (2B) + one no-grad reference fwd (adapters off)
  dpo_full  the same with full fine-tuning and a frozen reference copy
  sft_lora  2B winners, fwd+bwd only (the floor for DPO is ~4/3 of this: one extra forward)
  sft_full  the same, full fine-tuning
  mapo_lora B pairs, policy fwd+bwd on [w; l] (2B) and no reference at all (MaPO is reference-free)
  mapo_full the same with full fine-tuning: no frozen copy in memory
  dpocached_lora  dpo_lora with reference.mode=cached: the reference errors looked up by slot
  dpocached_full  dpo_full the same way: no reference forward and no frozen copy in memory
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from prefdiff.rss import RssSampler

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

UNETS = {
    # the tiny pipeline's own UNet (prefdiff make-tiny)
    "tiny": None,
    # a small SD-shaped UNet: still CPU-friendly, less overhead-dominated than tiny
    "small": dict(
        block_out_channels=(64, 128, 256),
        layers_per_block=1,
        cross_attention_dim=32,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        attention_head_dim=8,
        norm_num_groups=32,
    ),
    # SD1.5's UNet shape (860M parameters): use on a GPU
    "sd15": dict(
        block_out_channels=(320, 640, 1280, 1280),
        layers_per_block=2,
        cross_attention_dim=768,
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        attention_head_dim=8,
    ),
}
TRANSFORMERS = {
    "tiny": None,  # the family's tiny pipeline transformer (prefdiff make-tiny --family sd3|flux)
    # CPU-sized transformers of each family (width 256), less bound by Python overhead than the tiny ones
    "sd3_small": dict(
        family="sd3",
        sample_size=16,
        patch_size=2,
        in_channels=16,
        out_channels=16,
        num_layers=4,
        attention_head_dim=64,
        num_attention_heads=4,
        joint_attention_dim=64,
        caption_projection_dim=256,
        pooled_projection_dim=64,
        pos_embed_max_size=32,
    ),
    "flux_small": dict(
        family="flux",
        patch_size=1,
        in_channels=64,
        num_layers=2,
        num_single_layers=4,
        attention_head_dim=64,
        num_attention_heads=4,
        joint_attention_dim=64,
        pooled_projection_dim=32,
        guidance_embeds=True,
        axes_dims_rope=(8, 28, 28),
    ),
    # SD3.5 Medium's MMDiT-X (24 blocks of width 1536, dual attention in the first 13): use on a GPU
    "sd35_medium": dict(
        family="sd3",
        sample_size=128,
        patch_size=2,
        in_channels=16,
        out_channels=16,
        num_layers=24,
        attention_head_dim=64,
        num_attention_heads=24,
        joint_attention_dim=4096,
        caption_projection_dim=1536,
        pooled_projection_dim=2048,
        pos_embed_max_size=384,
        dual_attention_layers=tuple(range(13)),
        qk_norm="rms_norm",
    ),
    # FLUX.1's width (24 heads of 128 = 3072) with 2 double and 4 single blocks (FLUX.1 has 19 and 38):
    # per-block figures scale to the full depth
    "flux_width": dict(
        family="flux",
        patch_size=1,
        in_channels=64,
        num_layers=2,
        num_single_layers=4,
        attention_head_dim=128,
        num_attention_heads=24,
        joint_attention_dim=4096,
        pooled_projection_dim=768,
        guidance_embeds=True,
        axes_dims_rope=(16, 56, 56),
    ),
}
MODES = ("dpo_lora", "dpo_full", "sft_lora", "sft_full", "mapo_lora", "mapo_full", "dpocached_lora", "dpocached_full")


def synthetic_conditioning(family: str, denoiser, pairs: int, t5_tokens: int) -> dict:
    """Random text conditioning ``[P, ...]`` of the shapes the family's denoiser reads."""
    config = denoiser.config
    if family == "sd":
        return {"encoder_hidden_states": torch.randn(pairs, 77, config.cross_attention_dim)}
    tokens = 77 + t5_tokens if family == "sd3" else t5_tokens
    return {
        "encoder_hidden_states": torch.randn(pairs, tokens, config.joint_attention_dim),
        "pooled_projections": torch.randn(pairs, config.pooled_projection_dim),
    }


def build(args: argparse.Namespace, mode: str, pipeline_dir: Path):
    """The components of ``mode`` through ``build_components`` (as the trainer builds them), the
    strategy's prepared denoiser, reference and optimizer, and one synthetic cached batch."""
    from diffusers import UNet2DConditionModel

    from prefdiff.config import load_config
    from prefdiff.data.batch import LatentStats, PairBatch
    from prefdiff.models import load_backbone
    from prefdiff.train.components import build_components
    from prefdiff.train.optim import build_optimizer
    from prefdiff.train.step import StepContext

    device = torch.device(args.device)
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
    lora = mode.endswith("lora")
    cached = mode.startswith("dpocached")
    objective_name = "dpo" if cached else mode.split("_")[0]
    overrides = [
        f"model.path={pipeline_dir}",
        f"objective.name={objective_name}",
        f"lora.enabled={str(lora).lower()}",
        f"lora.rank={args.rank}",
        f"lora.alpha={args.rank}",
        "optim.lr=1e-6",
        f"optim.name={args.optim}",
    ]
    config = load_config(None, overrides + (["objective.beta=5000"] if objective_name == "dpo" else []))
    torch.manual_seed(0)
    backbone = load_backbone(pipeline_dir)
    if args.family == "sd":
        spec = UNETS[args.unet]
        if spec is not None:
            backbone.denoiser = UNet2DConditionModel(sample_size=args.latent, in_channels=4, out_channels=4, **spec)
    elif TRANSFORMERS[args.transformer] is not None:
        spec = dict(TRANSFORMERS[args.transformer])
        if spec.pop("family") != args.family:
            raise SystemExit(f"--transformer {args.transformer} is a {spec} transformer, not {args.family}")
        backbone.denoiser = backbone.denoiser_class()(**spec)
    components = build_components(config, backbone)
    objective, strategy = components.objective, components.strategy
    params = strategy.prepare(backbone, device, dtype)
    denoiser = backbone.denoiser
    if args.gradient_checkpointing:
        denoiser.enable_gradient_checkpointing()
    denoiser.train()

    def autocast():
        return torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32)

    reference = strategy.reference(backbone, dtype, autocast) if objective.needs_reference and not cached else None
    pairs = args.pairs if objective.needs_losers else 2 * args.pairs  # the same 2B images
    shape = (pairs, backbone.latent_shape(64)[0], args.latent, args.latent)
    batch = PairBatch(
        slots=list(range(pairs)),
        labels=torch.ones(pairs),
        original_size=torch.full((2 * pairs, 2), 512),
        crop_top_left=torch.zeros(2 * pairs, 2),
        prompt_cond=synthetic_conditioning(args.family, denoiser, pairs, args.t5_tokens),
        winner_latents=LatentStats(torch.randn(shape), torch.full(shape, 0.01)),
        loser_latents=LatentStats(torch.randn(shape), torch.full(shape, 0.01)),
    )
    optimizer = build_optimizer(params, config.optim)
    if cached:  # what `prefdiff reference` stores: the untrained policy's (the base's) errors per slot
        from prefdiff.train.reference import ModuleReference
        from prefdiff.train.reference_cache import CachedReference

        problem = backbone.denoising_problem(batch, 0, args.latent * 2, device)
        winners, losers = problem.split(ModuleReference(denoiser, autocast).errors(backbone, problem))
        reference = CachedReference(torch.stack([winners, losers], dim=1).float().cpu())
    ctx = StepContext(backbone, objective, reference, seed=0, resolution=args.latent * 2, device=device)
    return ctx, denoiser, optimizer, batch, autocast


def one_step(ctx, denoiser, optimizer, batch, autocast) -> None:
    from prefdiff.train.step import micro_batch_loss

    with autocast():
        out = micro_batch_loss(ctx, denoiser, batch)
    out.loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def time_modes(args: argparse.Namespace, pipeline_dir: Path) -> dict[str, float]:
    """Seconds per step for each mode, from interleaved rounds (median of rounds)."""
    built = {mode: build(args, mode, pipeline_dir) for mode in args.modes}
    for mode in args.modes:
        for _ in range(args.warmup):
            one_step(*built[mode])
    samples: dict[str, list[float]] = {mode: [] for mode in args.modes}
    for _ in range(args.rounds):
        for mode in args.modes:
            sync(args.device)
            start = time.perf_counter()
            for _ in range(args.steps):
                one_step(*built[mode])
            sync(args.device)
            samples[mode].append((time.perf_counter() - start) / args.steps)
    return {mode: sorted(v)[len(v) // 2] for mode, v in samples.items()}


def peak_memory(args: argparse.Namespace, mode: str, pipeline_dir: Path) -> float:
    """MiB for 3 steps of ``mode`` in a fresh process: peak CUDA allocation, or on CPU the peak
    RSS growth over the RSS after the imports (model build included)."""
    cmd = [sys.executable, __file__, "--child-memory", mode, "--pipeline", str(pipeline_dir)] + args.passthrough
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--family", choices=["sd", "sd3", "flux"], default="sd")
    parser.add_argument("--unet", choices=list(UNETS), default="tiny", help="the sd family's denoiser")
    parser.add_argument(
        "--transformer", choices=list(TRANSFORMERS), default="tiny", help="the sd3/flux families' denoiser"
    )
    parser.add_argument("--t5-tokens", type=int, default=77, help="T5 tokens of the flow families' conditioning")
    parser.add_argument("--pairs", type=int, default=4, help="B: pairs per DPO step (SFT gets 2B winners)")
    parser.add_argument("--latent", type=int, default=16, help="latent side (pixels / 8 for SD, / 2 for tiny)")
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--steps", type=int, default=5, help="steps per timed round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32")
    parser.add_argument("--gradient-checkpointing", action="store_true")
    parser.add_argument(
        "--optim", choices=["adamw", "adafactor"], default="adamw", help="the optimizer's state is memory too"
    )
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--child-memory", help=argparse.SUPPRESS)
    parser.add_argument("--pipeline", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.passthrough = [
        "--family",
        args.family,
        "--unet",
        args.unet,
        "--transformer",
        args.transformer,
        "--t5-tokens",
        str(args.t5_tokens),
        "--pairs",
        str(args.pairs),
        "--latent",
        str(args.latent),
        "--rank",
        str(args.rank),
        "--device",
        args.device,
        "--dtype",
        args.dtype,
        "--optim",
        args.optim,
    ] + (["--gradient-checkpointing"] if args.gradient_checkpointing else [])

    if args.child_memory:
        # CUDA: peak allocation. CPU: peak of the current RSS (sampled every 2 ms) above its value
        # just after the imports, over the model build and 3 steps: weights, frozen reference copy, gradients,
        # optimizer state and activations
        # (the imports alone are ~450 MiB of RSS and the same for every mode).
        import diffusers  # noqa: F401
        import peft  # noqa: F401
        import transformers  # noqa: F401

        import prefdiff.train.step  # noqa: F401

        sampler = RssSampler()
        if args.device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        ctx, denoiser, optimizer, batch, autocast = build(args, args.child_memory, args.pipeline)
        for _ in range(3):
            one_step(ctx, denoiser, optimizer, batch, autocast)
        peak_growth = sampler.stop()
        if args.device == "cuda":
            print(torch.cuda.max_memory_allocated() / 2**20)
        else:
            print(peak_growth / 2**20)
        return

    from prefdiff.models.tiny import build_tiny_pipeline

    with tempfile.TemporaryDirectory() as tmp:
        pipeline_dir = build_tiny_pipeline(Path(tmp) / "tiny", args.family)
        seconds = time_modes(args, pipeline_dir)
        memory = {mode: peak_memory(args, mode, pipeline_dir) for mode in args.modes}
    images = 2 * args.pairs
    denoiser_name = f"UNet {args.unet}" if args.family == "sd" else f"{args.family} transformer {args.transformer}"
    print(
        f"{denoiser_name}, latents {args.latent}x{args.latent}, {args.dtype} on {args.device}, "
        f"{images} images per step ({args.pairs} pairs for DPO, {images} winners for SFT), "
        f"torch threads {torch.get_num_threads()}"
    )
    print(f"{'mode':<14} {'ms/step':>9} {'pairs/s':>9} {'images/s':>9} {'mem MiB':>9}")
    for mode in args.modes:
        pairs_per_step = images if mode.startswith("sft") else args.pairs
        print(
            f"{mode:<14} {seconds[mode] * 1000:>9.1f} {pairs_per_step / seconds[mode]:>9.2f} "
            f"{images / seconds[mode]:>9.2f} {memory[mode]:>9.0f}"
        )
    ratios, mapo, cached = {}, {}, {}
    for kind in ("lora", "full"):
        if f"dpocached_{kind}" in seconds and f"sft_{kind}" in seconds:
            cached[kind] = {
                "step_over_sft": seconds[f"dpocached_{kind}"] / seconds[f"sft_{kind}"],
                "step_over_live": seconds[f"dpocached_{kind}"] / seconds.get(f"dpo_{kind}", float("nan")),
                "memory_over_live": memory[f"dpocached_{kind}"] / memory.get(f"dpo_{kind}", float("nan")),
            }
            print(
                f"cached-reference DPO ({kind}): step {cached[kind]['step_over_sft']:.2f}x SFT (target <= 1.05x), "
                f"{cached[kind]['step_over_live']:.2f}x live DPO; peak memory {cached[kind]['memory_over_live']:.2f}x "
                "live DPO (full: target <= 0.6x)"
            )
        if f"dpo_{kind}" in seconds and f"sft_{kind}" in seconds:
            ratios[kind] = seconds[f"dpo_{kind}"] / seconds[f"sft_{kind}"]
            print(f"DPO/SFT step time on the same {images} images ({kind}): {ratios[kind]:.2f}x (floor ~1.33x)")
        if f"dpo_{kind}" in seconds and f"mapo_{kind}" in seconds:
            mapo[kind] = seconds[f"mapo_{kind}"] / seconds[f"dpo_{kind}"]
            memory_ratio = memory[f"mapo_{kind}"] / memory[f"dpo_{kind}"]
            print(f"MaPO/DPO ({kind}): step time {mapo[kind]:.2f}x (target <= 0.8x), peak memory {memory_ratio:.2f}x")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "args": args.passthrough,
                    "seconds": seconds,
                    "peak_mib": memory,
                    "dpo_over_sft": ratios,
                    "mapo_over_dpo": mapo,
                    "cached_reference": cached,
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
