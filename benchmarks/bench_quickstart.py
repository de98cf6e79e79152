"""The toy-world quickstart with its defaults, timed per stage, and the same loop for other tastes.

    python benchmarks/bench_quickstart.py [--out runs/bench_quickstart]
        [--oracles large_central dark_background small_objects]
        [--fresh] [overrides ...]

The first oracle runs from scratch into OUT (``--fresh`` deletes OUT first), so its stage times
are the quickstart's. Each further oracle reruns the quickstart in the same directory with only
``toy.oracle`` changed: the on-policy pairs and the base model's samples are reused (they do not
depend on the taste) and everything from the votes on is redone. Prints one table row per oracle
and writes OUT/bench.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

COLUMNS = (
    ("win_rate_vs_base", "DPO vs base (raters)"),
    ("oracle_win_rate_vs_base", "DPO vs base (oracle)"),
    ("sft_win_rate_vs_base", "SFT vs base (raters)"),
    ("dpo_win_rate_vs_sft", "DPO vs SFT (raters)"),
    ("rater_oracle_agreement", "majority-oracle agreement"),
    ("faithfulness_base", "faithful base"),
    ("faithfulness_dpo", "faithful DPO"),
    ("faithfulness_sft", "faithful SFT"),
    ("implicit_accuracy_heldout", "implicit acc. held-out"),
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("runs/bench_quickstart"))
    parser.add_argument("--oracles", nargs="+", default=["large_central", "dark_background", "small_objects"])
    parser.add_argument(
        "--fresh", action="store_true", help="delete OUT first, so the first oracle's stage times are a cold run"
    )
    parser.add_argument("overrides", nargs="*", help="quickstart overrides applied to every run")
    args = parser.parse_args()

    from prefdiff.cli import _quiet_libraries
    from prefdiff.toy.quickstart import run_quickstart

    _quiet_libraries()
    if args.fresh and args.out.exists():
        shutil.rmtree(args.out)
    results = []
    for oracle in args.oracles:
        start = time.perf_counter()
        summary = run_quickstart(args.out, [*args.overrides, f"toy.oracle={oracle}"])
        wall = time.perf_counter() - start
        results.append(
            {
                "oracle": oracle,
                "wall_seconds": wall,
                **{k: summary[k] for k, _ in COLUMNS},
                "stage_seconds": summary["stage_seconds"],
            }
        )
        shutil.copy(args.out / "summary.json", args.out / f"summary_{oracle.replace(':', '_').replace('/', '_')}.json")

    print("| oracle | " + " | ".join(label for _, label in COLUMNS) + " | wall s |")
    print("| --- |" + " ---: |" * (len(COLUMNS) + 1))
    for row in results:
        cells = [f"{row[k]:.1%}" for k, _ in COLUMNS]
        print(f"| {row['oracle']} | " + " | ".join(cells) + f" | {row['wall_seconds']:.0f} |")
    print(
        "stage seconds of the first (cold) run:",
        json.dumps({k: round(v) for k, v in results[0]["stage_seconds"].items()}),
    )
    (args.out / "bench.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
