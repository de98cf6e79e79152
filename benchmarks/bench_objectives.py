"""The objective leaderboard: every objective on the toy tastes and seeds, under one protocol.

Each (taste, seed) cell is one `prefdiff quickstart` with `toy.objectives=[...]`: the objectives
share that cell's pairs, votes, cache and base samples, and each is compared with the base and
with DPO on the same 432 held-out comparisons (same caption, same seed). The defaults of every
objective are the quickstart's family recipe (beta, lr, LoRA), never tuned per taste. The table
goes into docs/objectives.md between the bench_objectives markers, the raw figures into
OUT/bench_objectives.json.

    python benchmarks/bench_objectives.py --jobs 2
    python benchmarks/bench_objectives.py --tastes large_central --seeds 0 1 --objectives dpo sft ipo
    python benchmarks/bench_objectives.py --report-only        # rebuild the table from OUT

A cell whose runs exist is reused stage by stage (the quickstart's own reuse), so adding an
objective to a finished leaderboard trains only that objective.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from statistics import mean
from typing import Any

from doc_markers import write_between

from prefdiff.objectives.base import OBJECTIVES

TASTES = ("large_central", "dark_background", "small_objects")
BEGIN, END = "<!-- bench_objectives:begin -->", "<!-- bench_objectives:end -->"


def default_objectives() -> list[str]:
    entries = ["dpo", "sft", "ipo", "hinge", "mapo"]
    entries += ["kto"] if "kto" in OBJECTIVES else []
    return entries + ["dpo@data.soft_labels=true", "dpo@label_smoothing=0.1", "dpo@winner_guard=true", "dpo@beta=auto"]


def cell_dir(out: Path, family: str, taste: str, seed: int) -> Path:
    return out / f"{'' if family == 'sd' else family + '_'}{taste}_s{seed}"


def run_cell(out: Path, family: str, taste: str, seed: int, objectives: list[str], extra: list[str]) -> dict[str, Any]:
    """One quickstart; returns ``{"cell", "rc", "seconds", "log"}``."""
    target = cell_dir(out, family, taste, seed)
    log = target.with_suffix(".log")
    command = [sys.executable, "-m", "prefdiff", "quickstart", "--out", str(target), f"toy.family={family}"]
    command += [f"toy.oracle={taste}", f"toy.seed={seed}", f"train.seed={seed}"]
    command += [f"toy.objectives=[{','.join(objectives)}]", *extra]
    start = time.perf_counter()
    with log.open("w") as sink:
        rc = subprocess.call(command, stdout=sink, stderr=subprocess.STDOUT, env={**os.environ, "OMP_NUM_THREADS": "1"})
    print(f"{target.name}: rc {rc} in {time.perf_counter() - start:.0f} s (log {log})", flush=True)
    return {"cell": target.name, "rc": rc, "seconds": round(time.perf_counter() - start, 1), "log": str(log)}


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{value:.1%}"


def _ci(row: dict[str, Any]) -> str:
    low, high = row["win_rate_vs_base_ci"]
    return f"{row['win_rate_vs_base']:.1%} ({low:.1%}-{high:.1%})"


def _num(value: float | None, fmt: str) -> str:
    return "–" if value is None else fmt.format(value)


def table(results: dict[str, dict[str, Any]], objectives: list[str], command: str) -> str:
    """The markdown written between the markers: a mean table per objective, then every cell."""
    cells = sorted(results)
    comparisons = sorted({results[c]["comparisons"] for c in cells})
    lines = [
        f"Made by `{command}` ({time.strftime('%Y-%m-%d')}; {len(cells)} cells: {', '.join(cells)}). Win rates "
        f"over {'/'.join(map(str, comparisons))} held-out comparisons per cell, ties half; raters = the 5 "
        "simulated raters' majority (fresh votes), "
        'oracle = the raw taste score. "above 50%" counts the cells whose 95% interval lies above one half.',
        "",
        "| objective | vs base, raters (mean) | cells above 50% | vs base, oracle | vs DPO, raters | faithful | "
        "implicit acc. | train s | peak MiB |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for entry in objectives:
        rows = [results[c]["objectives"][name] for c in cells for name in [_dir_of(results[c], entry)] if name]
        if not rows:
            continue

        def avg(key: str, rows: list[dict[str, Any]] = rows) -> float | None:
            values = [r[key] for r in rows if r.get(key) is not None]
            return mean(values) if values else None

        above = sum(1 for r in rows if r["win_rate_vs_base_ci"][0] > 0.5)
        figures = [
            _pct(avg("win_rate_vs_base")),
            f"{above}/{len(rows)}",
            _pct(avg("oracle_win_rate_vs_base")),
            _pct(avg("win_rate_vs_dpo")),
            _pct(avg("faithfulness")),
            _pct(avg("implicit_accuracy_heldout")),
            _num(avg("train_seconds"), "{:.0f}"),
            _num(avg("peak_memory_mb"), "{:.0f}"),
        ]
        lines.append(f"| `{entry}` | {' | '.join(figures)} |")
    lines += [
        "",
        "Every cell:",
        "",
        "| cell | objective | vs base, raters (95% CI) | oracle | vs DPO, raters | faithful | implicit acc. | beta "
        "| train s | peak MiB |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for cell in cells:
        for entry in objectives:
            name = _dir_of(results[cell], entry)
            if not name:
                continue
            r = results[cell]["objectives"][name]
            figures = [
                _ci(r),
                _pct(r["oracle_win_rate_vs_base"]),
                _pct(r["win_rate_vs_dpo"]),
                _pct(r["faithfulness"]),
                _pct(r["implicit_accuracy_heldout"]),
                _num(r["beta"], "{:.4g}"),
                _num(r["train_seconds"], "{:.0f}"),
                _num(r["peak_memory_mb"], "{:.0f}"),
            ]
            lines.append(f"| {cell} | `{entry}` | {' | '.join(figures)} |")
    return "\n".join(lines)


def _dir_of(summary: dict[str, Any], entry: str) -> str | None:
    for name, row in summary["objectives"].items():
        if row["entry"] == entry:
            return name
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tastes", nargs="+", default=list(TASTES))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--cells", nargs="+", default=None, help="TASTE:SEED cells instead of tastes x seeds")
    parser.add_argument("--objectives", nargs="+", default=None, help="toy.objectives entries (default: the menu)")
    parser.add_argument("--family", choices=["sd", "sd3"], default="sd")
    parser.add_argument("--out", type=Path, default=Path("runs/bench_objectives"))
    parser.add_argument("--jobs", type=int, default=1, help="quickstarts run side by side (one core each)")
    parser.add_argument("--docs", type=Path, default=Path(__file__).resolve().parents[1] / "docs" / "objectives.md")
    parser.add_argument("--extra", nargs="*", default=[], help="overrides passed to every quickstart (to shrink it)")
    parser.add_argument("--report-only", action="store_true", help="rebuild the table from the cells in --out")
    args = parser.parse_args()
    objectives = args.objectives or default_objectives()
    cells = [(taste, seed) for seed in args.seeds for taste in args.tastes]
    if args.cells:
        cells = [(cell.split(":")[0], int(cell.split(":")[1])) for cell in args.cells]
    args.out.mkdir(parents=True, exist_ok=True)
    runs: list[dict[str, Any]] = []
    if not args.report_only:
        with ThreadPoolExecutor(max_workers=args.jobs) as pool:
            futures = [
                pool.submit(run_cell, args.out, args.family, taste, seed, objectives, args.extra)
                for taste, seed in cells
            ]
            runs = [f.result() for f in futures]
    results = {}
    for taste, seed in cells:
        summary_file = cell_dir(args.out, args.family, taste, seed) / "summary.json"
        if summary_file.is_file():
            results[summary_file.parent.name] = json.loads(summary_file.read_text())
    failed = [r["cell"] for r in runs if r["rc"] != 0]
    chosen = (
        ["--cells " + " ".join(args.cells)]
        if args.cells
        else [
            "--tastes " + " ".join(args.tastes),
            "--seeds " + " ".join(map(str, args.seeds)),
        ]
    )
    command = f"python benchmarks/bench_objectives.py --family {args.family} " + " ".join(chosen)
    raw = {"command": command, "objectives": objectives, "runs": runs, "cells": results}
    (args.out / "bench_objectives.json").write_text(json.dumps(raw, indent=2) + "\n")
    if results:
        write_between(args.docs, BEGIN, END, table(results, objectives, command), "Objectives", "The leaderboard")
        print(f"table: {args.docs}; raw: {args.out / 'bench_objectives.json'}")
    if failed:
        sys.exit(f"failed cells: {', '.join(failed)} (see their logs)")


if __name__ == "__main__":
    main()
