"""Generation cost of the samplers in docs/turbo.md and docs/sdedit.md, side by side on the
shipped toy base: 15 DDIM steps at guidance 3 (the quickstart's default), 4 guidance-free steps
at trailing spacing (few-step), and SDEdit from colour layouts at strength 0.85 of 15 steps.

    python benchmarks/bench_few_step.py [--per-caption 16] [--rounds 3] [--batch 64]

Each round generates every setting into a fresh folder, in turn, through `generate_prompt_set`
(the code behind `prefdiff generate`); the figures are the median seconds per image and their
ratio to the default sampler's.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")


def main() -> None:
    from prefdiff.evaluate.generate import SamplerSettings, generate_prompt_set
    from prefdiff.toy.layouts import write_layouts
    from prefdiff.toy.quickstart import SHIPPED_BASE

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--per-caption", type=int, default=16, help="Images per held-out caption (6 captions).")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch", type=int, default=64)
    args = parser.parse_args()
    default = SamplerSettings(steps=15, guidance_scale=3.0)
    settings = {
        "15 steps, guidance 3 (default)": (default, False),
        "4 steps, trailing, guidance 0": (
            SamplerSettings(steps=4, guidance_scale=0.0, timestep_spacing="trailing"),
            False,
        ),
        "SDEdit 0.85 of 15 steps, guidance 3": (replace(default, strength=0.85), True),
    }
    seconds: dict[str, list[float]] = {name: [] for name in settings}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        layouts = write_layouts(root / "layouts", args.per_caption)
        images = 6 * args.per_caption
        for round_index in range(args.rounds):
            for name, (sampler, from_layouts) in settings.items():
                out = root / f"r{round_index}_{len(seconds[name])}_{abs(hash(name))}"
                start = time.perf_counter()
                # the layouts file is the prompt set of all three; only SDEdit starts from its images
                init = {"init_images": layouts} if from_layouts else {}
                generate_prompt_set(SHIPPED_BASE, layouts, 1, out, settings=sampler, batch_size=args.batch, **init)
                seconds[name].append((time.perf_counter() - start) / images)
    base = statistics.median(seconds["15 steps, guidance 3 (default)"])
    print(f"{images} images per setting, {args.rounds} rounds, median seconds per image (ratio to the default):")
    for name, values in seconds.items():
        median = statistics.median(values)
        print(f"  {name}: {median * 1000:.1f} ms ({median / base:.2f}x)")


if __name__ == "__main__":
    main()
