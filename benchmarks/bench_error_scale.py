"""The scale of the per-sample denoising errors a family's DPO sees, to put beta on that family's scale.

    python benchmarks/bench_error_scale.py --model DIR [--model DIR2 ...] --data PAIRS.parquet [--pairs 256]

For each pipeline directory (any registered family), over ``--pairs`` preference pairs drawn with
the family's own noise levels (timesteps uniform for the UNet families; the flow families'
density and shift): the mean per-sample error ``e`` (epsilon or velocity), and the spread of the
winner-loser difference ``e_w - e_l`` under the shared noise draw. DPO's argument is
``-beta/2 * ((e_w - e_ref_w) - (e_l - e_ref_l))``; the policy moves those differences in
proportion to the errors' own scale, so two families reach the same implicit reward margins with
betas in the inverse ratio of their error scales.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


@torch.no_grad()
def error_scale(model: Path, data: Path, pairs: int, resolution: int, batch: int) -> dict[str, float]:
    from prefdiff.config import load_config
    from prefdiff.data.dataset import build_pair_stream, collate_pairs
    from prefdiff.models import load_backbone

    backbone = load_backbone(model)
    config = load_config(None, [f"data.path={data}", f"data.resolution={resolution}", "data.random_flip=false"])
    stream = build_pair_stream(config.data, seed=0)
    errors_w, errors_l = [], []
    for start in range(0, pairs, batch):
        items = [stream[slot] for slot in range(start, min(start + batch, pairs))]
        problem = backbone.denoising_problem(collate_pairs(items), 0, resolution, torch.device("cpu"))
        winners, losers = problem.split(backbone.errors(backbone.denoiser, problem))
        errors_w.append(winners)
        errors_l.append(losers)
    e_w, e_l = torch.cat(errors_w), torch.cat(errors_l)
    diff = e_w - e_l
    return {
        "family": backbone.family,
        "mean_error": float(torch.cat([e_w, e_l]).mean()),
        "median_error": float(torch.cat([e_w, e_l]).median()),
        "std_winner_minus_loser": float(diff.std()),
        "mean_abs_winner_minus_loser": float(diff.abs().mean()),
        "pairs": len(diff),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, action="append", required=True)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--pairs", type=int, default=256)
    parser.add_argument("--resolution", type=int, default=32)
    parser.add_argument("--batch", type=int, default=32)
    args = parser.parse_args()
    rows = [error_scale(m, args.data, args.pairs, args.resolution, args.batch) for m in args.model]
    print(f"{'model':<40} {'family':<6} {'mean e':>8} {'median e':>9} {'std(e_w-e_l)':>13} {'mean|e_w-e_l|':>14}")
    for model, row in zip(args.model, rows, strict=True):
        print(
            f"{str(model)[-40:]:<40} {row['family']:<6} {row['mean_error']:>8.4f} {row['median_error']:>9.4f} "
            f"{row['std_winner_minus_loser']:>13.4f} {row['mean_abs_winner_minus_loser']:>14.4f}"
        )
    if len(rows) > 1:
        base = rows[0]["std_winner_minus_loser"]
        for model, row in zip(args.model[1:], rows[1:], strict=True):
            print(f"std(e_w - e_l) of {model.name} / {args.model[0].name}: {row['std_winner_minus_loser'] / base:.2f}")


if __name__ == "__main__":
    main()
