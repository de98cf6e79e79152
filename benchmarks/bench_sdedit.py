"""SDEdit from colour layouts: the DPO model against its base over a sweep of strengths, on
finished quickstart directories (one per taste), side by side in one run.

For each cell and strength, base and DPO edit the same layouts (`prefdiff toy layouts`, the
quickstart's own when it has them) from the same seeds with the cell's sampler, and the
quickstart's evaluation scores them: the raters' majority (fresh votes at the cell's calibrated
temperature), the oracle, and the faithfulness of both. Figures go to OUT.json and, as a table,
to docs/sdedit.md between the bench_sdedit markers.

    python benchmarks/bench_sdedit.py /work/qs/lc0 /work/qs/db0 /work/qs/so0 --strengths 0.5 0.7 0.85 1.0
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from prefdiff.evaluate.generate import SamplerSettings, generate_prompt_set
from prefdiff.evaluate.scorers import load_mixed
from prefdiff.toy.config import ToyConfig
from prefdiff.toy.evaluation import evaluate_layouts, tuned_weights
from prefdiff.toy.layouts import LAYOUTS_FILE, write_layouts
from prefdiff.toy.quickstart import SHIPPED_BASES

BEGIN, END = "<!-- bench_sdedit:begin -->", "<!-- bench_sdedit:end -->"


def cell_settings(cell: Path) -> tuple[str, int, SamplerSettings, float]:
    """The oracle spec, toy seed, sampler and rater temperature a quickstart directory ran with."""
    summary = json.loads((cell / "summary.json").read_text())
    key = json.loads((cell / "pairs" / "stage.json").read_text())["key"]
    sampler = SamplerSettings(**key["sampler"])
    temperature = float(json.loads((cell / "votes" / "votes.json").read_text())["temperature"])
    return summary["oracle"], int(key["seed"]), sampler, temperature


def sweep_cell(cell: Path, strengths: list[float], per_caption: int, batch: int) -> list[dict[str, Any]]:
    spec, seed, sampler, temperature = cell_settings(cell)
    layouts = cell / "sdedit_sweep" / "layouts"
    if not (layouts / LAYOUTS_FILE).is_file():
        write_layouts(layouts, per_caption, seed)
    scorer = load_mixed(spec)
    toy = ToyConfig(seed=seed, layouts_per_caption=per_caption)
    rows = []
    for strength in strengths:
        settings = replace(sampler, strength=strength)
        samples, seconds = {}, {}
        for name, weights in (("base", {}), ("dpo", tuned_weights(cell / "dpo"))):
            target = cell / "sdedit_sweep" / f"s{strength:g}" / name
            start = time.perf_counter()
            generate_prompt_set(
                SHIPPED_BASES["sd"],
                None,
                1,
                target,
                settings=settings,
                base_seed=seed + 3,
                batch_size=batch,
                init_images=layouts / LAYOUTS_FILE,
                **weights,
            )
            samples[name], seconds[name] = target, round(time.perf_counter() - start, 1)
        result = evaluate_layouts(samples, scorer, temperature, toy)
        rows.append({"cell": cell.name, "oracle": spec, **{k: v for k, v in result.items() if k != "models"}})
        for key in ("radius_mean", "layout_centre_shift", "layout_radius_change"):
            rows[-1][key] = {name: m[key] for name, m in result["models"].items()}
        rows[-1]["generate_seconds"] = seconds
        print(
            f"{cell.name} strength {strength:g}: DPO wins {result['win_rate_vs_base']:.1%} (raters), "
            f"{result['oracle_win_rate_vs_base']:.1%} (oracle); faithful base {result['faithfulness_base']:.1%}, "
            f"DPO {result['faithfulness_dpo']:.1%}",
            flush=True,
        )
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| cell | strength | steps | DPO vs base, raters (95% CI) | oracle | faithful base / DPO "
        "| moved from the layout, base / DPO: centre, radius |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        low, high = row["win_rate_vs_base_ci"]
        shift, grow = row["layout_centre_shift"], row["layout_radius_change"]
        lines.append(
            f"| {row['cell']} | {row['strength']:g} | {int(row['sampler_steps'] * row['strength'])} of "
            f"{row['sampler_steps']} | {row['win_rate_vs_base']:.1%} ({low:.1%}-{high:.1%}) | "
            f"{row['oracle_win_rate_vs_base']:.1%} | {row['faithfulness_base']:.1%} / {row['faithfulness_dpo']:.1%} | "
            f"{shift['base']:.3f}, {grow['base']:+.3f} / {shift['dpo']:.3f}, {grow['dpo']:+.3f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("cells", nargs="+", type=Path, help="Finished quickstart directories (toy.family=sd).")
    parser.add_argument("--strengths", nargs="+", type=float, default=[0.5, 0.7, 0.85, 1.0])
    parser.add_argument("--per-caption", type=int, default=24, help="Layouts per held-out caption.")
    parser.add_argument("--batch", type=int, default=64, help="Images per generation call.")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/bench_sdedit.json"))
    parser.add_argument("--docs", type=Path, default=Path("docs/sdedit.md"), help="Where the table goes.")
    args = parser.parse_args()
    rows = [row for cell in args.cells for row in sweep_cell(cell, args.strengths, args.per_caption, args.batch)]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(rows, indent=2) + "\n")
    text = table(rows)
    print(text)
    if args.docs.is_file() and BEGIN in (doc := args.docs.read_text()):
        head, rest = doc.split(BEGIN, 1)
        args.docs.write_text(f"{head}{BEGIN}\n{text}\n{END}{rest.split(END, 1)[1]}")


if __name__ == "__main__":
    main()
