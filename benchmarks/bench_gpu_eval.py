"""Evaluation at real size on a GPU: a random-init SDXL-size pipeline at 1024 px in fp32 against
fp16 (images/s, seconds per step, peak memory), and a random-init CLIP ViT-H/14-size scorer at
batch 1 against 64 (scored images/s) in both precisions.

    python benchmarks/bench_gpu_eval.py [--steps 10] [--images 2] [--rounds 2] [--score-images 128]
        [--out bench_gpu_eval.json] [--small]

Nothing is downloaded: the networks are built from the published shapes (SDXL base: a UNet of
widths 320/640/1280 with 1/2/10 transformer layers, CLIP ViT-L and OpenCLIP ViT-bigG text
encoders, the 4-channel VAE; the scorer: ViT-H/14 at 224 px with a 1024-wide text tower) with
random weights, which time like the real ones. Generation goes through prefdiff's own
placement and sampling (``generate._place`` and ``generate._sample``: CPU-seeded noise per
image, classifier-free guidance 5.0, Euler); scoring through ``PickScoreScorer`` and
``Scorer.cast``. The precisions alternate round by round on one pipeline, converted in place;
each figure is the best round. ``--small`` shrinks every network so the script runs on a CPU
(bf16 there instead of fp16), which is how it is checked without a GPU.
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
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


def sdxl_pipeline(tokenizer_dir: Path, small: bool, device: Any) -> Any:
    """StableDiffusionXLPipeline with SDXL base's shapes (or a shrunken copy), random weights,
    built directly on ``device`` in fp32."""
    import torch
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    tokenizer = CLIPTokenizer.from_pretrained(str(tokenizer_dir))
    widths, depths, heads = ((320, 640, 1280), (1, 2, 10), (5, 10, 20)) if not small else ((32, 64, 64), (1, 1, 1), 2)
    text = [(768, 12, 12), (1280, 32, 20)] if not small else [(32, 2, 2), (64, 2, 2)]
    with torch.device(device):
        encoders = [
            cls(
                CLIPTextConfig(
                    hidden_size=width,
                    intermediate_size=4 * width,
                    num_hidden_layers=layers,
                    num_attention_heads=n_heads,
                    projection_dim=width,
                    vocab_size=49408,
                    max_position_embeddings=77,
                    hidden_act="quick_gelu" if index == 0 else "gelu",
                )
            )
            for index, (cls, (width, layers, n_heads)) in enumerate(
                zip((CLIPTextModel, CLIPTextModelWithProjection), text, strict=True)
            )
        ]
        unet = UNet2DConditionModel(
            sample_size=128 if not small else 16,
            in_channels=4,
            out_channels=4,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
            block_out_channels=widths,
            layers_per_block=2 if not small else 1,
            transformer_layers_per_block=depths,
            attention_head_dim=heads,
            cross_attention_dim=text[0][0] + text[1][0],
            use_linear_projection=True,
            addition_embed_type="text_time",
            addition_time_embed_dim=256 if not small else 8,
            projection_class_embeddings_input_dim=text[1][0] + 6 * (256 if not small else 8),
        )
        vae_widths = (128, 256, 512, 512) if not small else (16, 16, 32, 32)
        vae = AutoencoderKL(
            in_channels=3,
            out_channels=3,
            down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4,
            block_out_channels=vae_widths,
            layers_per_block=2 if not small else 1,
            latent_channels=4,
            norm_num_groups=32 if not small else 8,
            sample_size=1024 if not small else 128,
            scaling_factor=0.13025,
            force_upcast=True,  # as SDXL's VAE config: the decoder runs in fp32 under fp16
        )
    scheduler = EulerDiscreteScheduler(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        steps_offset=1,
        timestep_spacing="leading",
    )
    return StableDiffusionXLPipeline(
        vae=vae,
        text_encoder=encoders[0],
        text_encoder_2=encoders[1],
        tokenizer=tokenizer,
        tokenizer_2=tokenizer,
        unet=unet,
        scheduler=scheduler,
    )


def vit_h_scorer(tokenizer_dir: Path, small: bool, device: Any) -> Any:
    """A PickScore-kind scorer over a random CLIP with ViT-H/14's shape (or a shrunken one)."""
    import torch
    from transformers import CLIPConfig, CLIPImageProcessorPil, CLIPModel, CLIPProcessor, CLIPTokenizer

    from prefdiff.evaluate.scorers.base import ClipEmbedder
    from prefdiff.evaluate.scorers.clip_scorers import PickScoreScorer

    tokenizer = CLIPTokenizer.from_pretrained(str(tokenizer_dir))
    vision = dict(hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=16)
    text = dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16)
    if small:
        vision = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2)
        text = dict(vision)
    config = CLIPConfig(
        vision_config=dict(image_size=224, patch_size=14, hidden_act="gelu", **vision),
        text_config=dict(vocab_size=49408, max_position_embeddings=77, hidden_act="gelu", **text),
        projection_dim=1024 if not small else 64,
    )
    with torch.device(device):
        model = CLIPModel(config).eval()
    crop = {"height": 224, "width": 224}
    processor = CLIPProcessor(
        image_processor=CLIPImageProcessorPil(size={"shortest_edge": 224}, crop_size=crop), tokenizer=tokenizer
    )
    return PickScoreScorer(ClipEmbedder(model, processor, device), name="pickscore:vit-h-random")


def peak_gib(device: Any) -> float | None:
    import torch

    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None


def sync(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=10, help="Sampler steps per image (guidance 5.0).")
    parser.add_argument("--images", type=int, default=2, help="Images per precision and round, one per call.")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--score-images", type=int, default=128)
    parser.add_argument("--out", type=Path, default=None, help="Also write the figures as JSON here.")
    parser.add_argument("--small", action="store_true", help="Shrunken networks, for a CPU check of the script.")
    args = parser.parse_args()

    import torch
    from PIL import Image

    from prefdiff.evaluate.generate import Job, Placement, SamplerSettings, _place, _sample
    from prefdiff.models.tiny import build_clip_tokenizer_files

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    half_name = "fp16" if device.type == "cuda" else "bf16"
    precisions = {"fp32": torch.float32, half_name: torch.float16 if device.type == "cuda" else torch.bfloat16}
    size = 1024 if not args.small else 128
    results: dict[str, Any] = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"}
    results.update(steps=args.steps, resolution=size, small=args.small, generate={}, score={})
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer_dir = Path(tmp) / "tokenizer"
        build_clip_tokenizer_files(tokenizer_dir)

        start = time.perf_counter()
        pipe = sdxl_pipeline(tokenizer_dir, args.small, device)
        pipe.set_progress_bar_config(disable=True)
        results["build_seconds"] = round(time.perf_counter() - start, 1)
        results["unet_parameters"] = sum(p.numel() for p in pipe.unet.parameters())
        settings = SamplerSettings(steps=args.steps, guidance_scale=5.0)
        jobs = [Job(f"a photo of object {i}", i, 0, 1000 + i, f"{i}.png") for i in range(args.images)]
        rates: dict[str, list[float]] = {name: [] for name in precisions}
        peaks: dict[str, float | None] = {}
        for _round in range(args.rounds):
            for name, dtype in precisions.items():
                _place(pipe, Placement(device=str(device), dtype=name), device, dtype)
                _sample(pipe, jobs[:1], replace_steps(settings, 1), size, {})  # warm-up: kernels, allocator
                if device.type == "cuda":
                    torch.cuda.empty_cache()
                    torch.cuda.reset_peak_memory_stats(device)
                sync(device)
                begin = time.perf_counter()
                for job in jobs:
                    _sample(pipe, [job], settings, size, {})
                sync(device)
                rates[name].append(len(jobs) / (time.perf_counter() - begin))
                peaks[name] = peak_gib(device)
        for name in precisions:
            best = max(rates[name])
            results["generate"][name] = {
                "images_per_s": round(best, 4),
                "seconds_per_step": round(1 / best / args.steps, 4),
                "peak_memory_gib": None if peaks[name] is None else round(peaks[name], 2),
            }
        del pipe
        if device.type == "cuda":
            torch.cuda.empty_cache()

        scorer = vit_h_scorer(tokenizer_dir, args.small, device)
        generator = torch.Generator().manual_seed(0)
        pixels = torch.randint(0, 256, (8, 512, 512, 3), generator=generator, dtype=torch.uint8)
        pool = [Image.fromarray(p.numpy()) for p in pixels]
        images = [pool[i % len(pool)] for i in range(args.score_images)]
        prompts = [f"a photo of object {i}" for i in range(args.score_images)]
        scored: dict[str, list[float]] = {}
        for name, dtype in precisions.items():
            scorer.cast(dtype)
            for batch in (1, 64):
                scorer.batch_size = batch
                scorer.score(images[:batch], prompts[:batch])  # warm-up
                best = 0.0
                for _round in range(args.rounds):
                    sync(device)
                    begin = time.perf_counter()
                    scored[name] = scorer.score(images, prompts)
                    sync(device)
                    best = max(best, len(images) / (time.perf_counter() - begin))
                results["score"][f"{name}_batch{batch}"] = round(best, 2)
        results["score"]["largest_change_half_vs_fp32"] = round(
            max(abs(a - b) for a, b in zip(scored["fp32"], scored[half_name], strict=True)), 4
        )

    g32, ghalf = results["generate"]["fp32"], results["generate"][half_name]
    s = results["score"]
    print(f"{results['device']}; SDXL-size UNet of {results['unet_parameters'] / 1e9:.2f}B parameters, {size} px")
    print("| | fp32 | " + half_name + " | " + half_name + " / fp32 |\n| --- | ---: | ---: | ---: |")
    ratio = ghalf["images_per_s"] / g32["images_per_s"]
    print(
        f"| generate, images/s ({args.steps} steps) | {g32['images_per_s']} | {ghalf['images_per_s']} | {ratio:.2f}x |"
    )
    print(f"| generate, peak memory GiB | {g32['peak_memory_gib']} | {ghalf['peak_memory_gib']} | |")
    for batch in (1, 64):
        ratio = s[f"{half_name}_batch{batch}"] / s[f"fp32_batch{batch}"]
        print(
            f"| score ViT-H, images/s, batch {batch} | {s[f'fp32_batch{batch}']} | {s[f'{half_name}_batch{batch}']} | "
            f"{ratio:.2f}x |"
        )
    print(f"batch 64 over batch 1: fp32 {s['fp32_batch64'] / s['fp32_batch1']:.2f}x, ", end="")
    print(f"{half_name} {s[f'{half_name}_batch64'] / s[f'{half_name}_batch1']:.2f}x")
    if args.out is not None:
        args.out.write_text(json.dumps(results, indent=2) + "\n")


def replace_steps(settings: Any, steps: int) -> Any:
    from dataclasses import replace

    return replace(settings, steps=steps)


if __name__ == "__main__":
    main()
