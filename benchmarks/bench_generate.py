"""Images/s generated and scored on the tiny pipeline, batched against one at a time.

    python benchmarks/bench_generate.py [--images 16] [--steps 10] [--resolution 64] [--rounds 2]
        [--device auto] [--clip-width 768]

Also batched generation in bf16 against fp32 on the same device (`--dtype bf16`; on a CPU
without fast bf16 kernels it can be slower), alternating with the fp32 runs, and scoring in
bf16 against fp32 (batch 16) by a `pickscore:` scorer on a random CLIP of ViT-B/32's shape
(`--clip-width 768`: 12 layers of width 768 over 224 px in 32 px patches, heads 64 wide), a
size where the precision rather than the call overhead decides.

Generation runs `generate_prompt_set` (the code behind `prefdiff generate --prompts`) with
batch size 1 and 8 into fresh folders, alternating; scoring runs a `clip:` scorer (a tiny random
CLIP saved in the transformers layout) over the same images with batch size 1 and 16.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


def tiny_clip_dir(root: Path, width: int = 32) -> Path:
    """A random CLIPModel with tokenizer and PIL processor: width 32 is 2 layers over 32 px in
    8 px patches; a larger width is 12 layers of heads 64 wide over 224 px in 32 px patches."""
    import torch
    from transformers import CLIPConfig, CLIPImageProcessorPil, CLIPModel, CLIPTokenizer

    from prefdiff.models.tiny import build_clip_tokenizer_files

    out = root / f"clip_{width}"
    build_clip_tokenizer_files(out)
    tok = CLIPTokenizer.from_pretrained(str(out))
    layers, heads, size, patch = (2, 2, 32, 8) if width == 32 else (12, width // 64, 224, 32)
    common = dict(hidden_size=width, intermediate_size=4 * width if width > 32 else 64, num_hidden_layers=layers)
    common["num_attention_heads"] = heads
    text = dict(
        vocab_size=len(tok),
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.eos_token_id,
        **common,
    )
    torch.manual_seed(0)
    vision = dict(image_size=size, patch_size=patch, **common)
    CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=min(width, 512))).save_pretrained(
        str(out)
    )
    crop = {"height": size, "width": size}
    CLIPImageProcessorPil(size={"shortest_edge": size}, crop_size=crop).save_pretrained(str(out))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--clip-width", type=int, default=768, help="The CLIP of the precision comparison.")
    parser.add_argument("--score-images", type=int, default=64, help="Images scored per precision and round.")
    args = parser.parse_args()

    import torch
    from PIL import Image

    from prefdiff.evaluate.generate import Placement, SamplerSettings, generate_prompt_set
    from prefdiff.evaluate.scorers import load_scorer
    from prefdiff.models.tiny import build_tiny_pipeline

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model = build_tiny_pipeline(root / "tiny", "sd")
        prompts = root / "prompts.txt"
        prompts.write_text("".join(f"a red circle number {i}\n" for i in range(args.images)))
        settings = SamplerSettings(steps=args.steps, resolution=args.resolution)
        gen: dict[int, list[float]] = {1: [], 8: []}
        bf16: list[float] = []
        for r in range(args.rounds):
            for batch in gen:
                start = time.perf_counter()
                paths = generate_prompt_set(
                    model,
                    prompts,
                    1,
                    root / f"gen_b{batch}_r{r}",
                    settings=settings,
                    batch_size=batch,
                    placement=Placement(device=args.device),
                )
                gen[batch].append(len(paths) / (time.perf_counter() - start))
            start = time.perf_counter()
            half = Placement(device=args.device, dtype="bf16")
            generate_prompt_set(
                model, prompts, 1, root / f"gen_bf16_r{r}", settings=settings, batch_size=8, placement=half
            )
            bf16.append(args.images / (time.perf_counter() - start))
        images = [Image.open(p).convert("RGB") for p in paths]
        texts = [f"a red circle number {i}" for i in range(len(images))]
        scorer = load_scorer(f"clip:{tiny_clip_dir(root)}")
        score = {1: [], 16: []}
        for _ in range(args.rounds):
            for batch in score:
                start = time.perf_counter()
                for i in range(0, len(images), batch):
                    scorer.score(images[i : i + batch], texts[i : i + batch])
                score[batch].append(len(images) / (time.perf_counter() - start))
        from prefdiff.devices import resolve_device

        where = resolve_device(args.device)
        spec = f"pickscore:{tiny_clip_dir(root, args.clip_width)}"
        scorers = {name: load_scorer(spec, where, dtype) for name, dtype in (("fp32", None), ("bf16", torch.bfloat16))}
        many = (images * (args.score_images // len(images) + 1))[: args.score_images]
        many_texts = (texts * (args.score_images // len(texts) + 1))[: args.score_images]
        by_precision: dict[str, list[float]] = {name: [] for name in scorers}
        for _ in range(args.rounds):
            for name, precise in scorers.items():
                start = time.perf_counter()
                precise.score(many, many_texts)  # batches of 16 (BatchedScorer.batch_size)
                by_precision[name].append(len(many) / (time.perf_counter() - start))
        drift = max(
            abs(a - b)
            for a, b in zip(
                scorers["fp32"].score(many, many_texts), scorers["bf16"].score(many, many_texts), strict=True
            )
        )

    best = {k: max(v) for k, v in gen.items()}
    best_score = {k: max(v) for k, v in score.items()}
    print(
        f"tiny pipeline, {args.images} images at {args.resolution} px, {args.steps} steps; "
        f"CPU threads {torch.get_num_threads()}"
    )
    print(f"generate: {best[1]:.2f} images/s one at a time, {best[8]:.2f} batched by 8: {best[8] / best[1]:.2f}x")
    print(f"generate bf16 (batch 8): {max(bf16):.2f} images/s, {max(bf16) / best[8]:.2f}x fp32's")
    print(
        f"score (clip): {best_score[1]:.1f} images/s one at a time, {best_score[16]:.1f} batched by 16: "
        f"{best_score[16] / best_score[1]:.2f}x"
    )
    fp32, bf16_score = max(by_precision["fp32"]), max(by_precision["bf16"])
    print(
        f"score (pickscore, width {args.clip_width}, batch 16, {where}): fp32 {fp32:.2f} images/s, "
        f"bf16 {bf16_score:.2f} images/s: {bf16_score / fp32:.2f}x; largest score change {drift:.3f} (PickScore units)"
    )


if __name__ == "__main__":
    main()
