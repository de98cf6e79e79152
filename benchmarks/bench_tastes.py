"""The taste suite: the quickstart's DPO and SFT on every built-in taste, tuning half and held-out half.

Each taste is one `prefdiff quickstart` (shipped defaults unless --extra says otherwise) into
OUT/<taste>. The on-policy pairs and the base model's samples do not depend on the taste: the
first cell makes them and every other cell starts from a copy, so a cell costs its votes, cache,
training and its own models' samples. The table goes into docs/tastes.md between the
bench_tastes markers (or --docs), the raw figures into OUT/bench_tastes.json.

    python benchmarks/bench_tastes.py --jobs 2
    python benchmarks/bench_tastes.py --tastes vivid_colour crisp_edges --extra train.max_steps=800
    python benchmarks/bench_tastes.py --report-only

--curves also scores every snapshot a DPO-family run kept (RUN/steps/step_N, written when
train.select_step is best or one_se): for each objective and evaluated step, the win rate by
the raters and the oracle on the same held-out comparisons, beside the validation implicit
accuracy of that step, and what each selection rule (and each fixed step) would have kept. It
is how the defaults' training length and beta were chosen (docs/tastes.md, "How the defaults
were chosen"); it adds one generation of 432 images per snapshot.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from statistics import median
from typing import Any

from doc_markers import write_between

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

from prefdiff.toy.oracle import HELDOUT_TASTES, TASTES, TUNING_TASTES

BEGIN, END = "<!-- bench_tastes:begin -->", "<!-- bench_tastes:end -->"
CURVES_BEGIN, CURVES_END = "<!-- bench_tastes_curves:begin -->", "<!-- bench_tastes_curves:end -->"
SHARED = ("pairs", "samples/base")  # stages that do not depend on the taste
CURVES_SKIP = ("sft",)  # the defaults were chosen on DPO's curves


def half_of(taste: str) -> str:
    return "tuning" if taste in TUNING_TASTES else "held-out" if taste in HELDOUT_TASTES else "other"


def prepare_shared(out: Path, seed: int, extra: list[str]) -> Path:
    """The taste-free stages once, into OUT/_shared: a quickstart that trains one step."""
    shared = out / "_shared"
    command = [sys.executable, "-m", "prefdiff", "quickstart", "--out", str(shared), f"toy.seed={seed}", *extra]
    command += ["train.max_steps=1", "train.select_step=last", "toy.layouts_per_caption=0"]  # eval_every kept:
    # the validation pairs are in the pairs stage's key when the cells evaluate
    with (out / "_shared.log").open("w") as sink:
        if subprocess.call(command, stdout=sink, stderr=subprocess.STDOUT) != 0:
            sys.exit(f"making the shared stages failed (see {out / '_shared.log'})")
    return shared


def _seed_cell(out: Path, first: Path, target: Path) -> None:
    """Start ``target`` from ``first``'s taste-free stages (the quickstart reuses them by digest)."""
    for name in SHARED:
        source, dest = first / name, target / name
        if source.is_dir() and not dest.exists():
            shutil.copytree(source, dest)


def run_cell(out: Path, taste: str, seed: int, objectives: list[str], extra: list[str]) -> dict[str, Any]:
    target = out / taste
    target.mkdir(parents=True, exist_ok=True)
    log = out / f"{taste}.log"
    command = [sys.executable, "-m", "prefdiff", "quickstart", "--out", str(target), f"toy.oracle={taste}"]
    command += [f"toy.seed={seed}", f"train.seed={seed}", f"toy.objectives=[{','.join(objectives)}]", *extra]
    start = time.perf_counter()
    with log.open("w") as sink:
        rc = subprocess.call(command, stdout=sink, stderr=subprocess.STDOUT, env={**os.environ, "OMP_NUM_THREADS": "1"})
    seconds = time.perf_counter() - start
    print(f"{taste}: rc {rc} in {seconds:.0f} s (log {log})", flush=True)
    return {"taste": taste, "rc": rc, "seconds": round(seconds, 1), "log": str(log)}


# ---- curves: every kept snapshot of every run, scored like the quickstart's own samples


def score_curves(cell: Path, taste: str, extra: list[str]) -> dict[str, Any]:
    """``{entry dir: [{"step", "validation_implicit_accuracy", win rates ...}]}`` for one cell."""
    from prefdiff.evaluate.generate import generate_prompt_set
    from prefdiff.evaluate.scorers import load_mixed
    from prefdiff.toy.evaluation import versus_base
    from prefdiff.toy.oracle import oracle_spec
    from prefdiff.toy.quickstart import SHIPPED_BASES, sampler_for, split_overrides
    from prefdiff.train.selection import read_curve, snapshot_dir

    summary = json.loads((cell / "summary.json").read_text())
    toy, config = split_overrides([*extra, f"toy.oracle={taste}"])
    sampler = sampler_for(toy, config)
    scorer = load_mixed(oracle_spec(taste))
    temperature = float(summary["rater_temperature"])
    base = Path(toy.base) if toy.base else SHIPPED_BASES[toy.family]
    curves: dict[str, Any] = {}
    for name, row in summary["objectives"].items():
        if row["entry"] in CURVES_SKIP:
            continue
        run = cell / name
        points = []
        for evaluation in read_curve(run):
            step = evaluation["step"]
            snapshot = snapshot_dir(run, step) / "lora"
            if step == row["selected_step"]:
                samples = cell / "samples" / name  # the quickstart's own images are of the kept step
            elif snapshot.is_dir():
                samples = cell / "curves" / name / f"step_{step:07d}"
                if not (samples / "manifest.jsonl").is_file():
                    shutil.rmtree(samples, ignore_errors=True)
                    generate_prompt_set(
                        base,
                        cell / "eval_prompts.txt",
                        toy.eval_images_per_caption,
                        samples,
                        settings=sampler,
                        base_seed=toy.seed + 2,
                        batch_size=toy.generate_batch,
                        lora=snapshot,
                    )
            else:
                continue  # a last step that was not kept has no snapshot
            figures = versus_base(samples, cell / "samples" / "base", scorer, temperature, toy, toy.seed * 1000 + 101)
            points.append(
                {
                    "step": step,
                    "validation_implicit_accuracy": evaluation["eval_implicit_acc"],
                    "validation_pairs": evaluation["eval_pairs"],
                    **figures,
                }
            )
        curves[name] = {"entry": row["entry"], "selected_step": row["selected_step"], "points": points}
    return curves


def curves_in_subprocess(out: Path, taste: str, extra: list[str]) -> dict[str, Any]:
    log = out / f"{taste}.curves.log"
    command = [sys.executable, __file__, "--out", str(out), "--curves-of", taste, "--extra", *extra]
    with log.open("w") as sink:
        rc = subprocess.call(command, stdout=sink, stderr=subprocess.STDOUT, env={**os.environ, "OMP_NUM_THREADS": "1"})
    if rc != 0:
        sys.exit(f"{taste}: scoring the curves failed (see {log})")
    return json.loads((out / taste / "curves.json").read_text())


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{value:.1%}"


def _ci(row: dict[str, Any], key: str = "win_rate_vs_base") -> str:
    low, high = row[f"{key}_ci"]
    return f"{row[key]:.1%} ({low:.1%}-{high:.1%})"


def _dpo_vs_sft(summary: dict[str, Any]) -> float:
    return float(summary["dpo_win_rate_vs_sft"])


def table(results: dict[str, dict[str, Any]], command: str, extra_objectives: list[str]) -> str:
    lines = [
        f"Made by `{command}` ({time.strftime('%Y-%m-%d')}). One quickstart per taste, seed 0, "
        f"{'/'.join(sorted({str(r['comparisons']) for r in results.values()}))} held-out comparisons each (same "
        "caption, same seed), ties half. Raters: the five simulated raters' majority (fresh "
        "votes); oracle: the raw taste score; faithful: colour and shape read back as the caption says; score "
        "shift: the mean oracle score of the tuned model minus the base's.",
        "",
        "| taste | half | reads | DPO vs base, raters (95% CI) | oracle | SFT vs base, raters | DPO vs SFT | "
        "faithful: base / DPO / SFT | score shift: DPO / SFT | kept step | train s (DPO) |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    order = [t for t in (*TUNING_TASTES, *HELDOUT_TASTES) if t in results]
    order += [t for t in results if t not in order]
    for taste in order:
        s = results[taste]
        dpo = s["objectives"]["dpo"]
        reads = TASTES[taste][1] if taste in TASTES else "custom"
        faithful = f"{s['faithfulness_base']:.1%} / {s['faithfulness_dpo']:.1%} / {s['faithfulness_sft']:.1%}"
        dpo_shift, sft_shift = (s[f"oracle_score_{m}"] - s["oracle_score_base"] for m in ("dpo", "sft"))
        shift = f"{dpo_shift:+.3f} / {sft_shift:+.3f}"
        kept = "–" if dpo.get("selected_step") is None else str(dpo["selected_step"])
        lines.append(
            f"| `{taste}` | {half_of(taste)} | {reads} | {_ci(s)} | {_pct(s['oracle_win_rate_vs_base'])} | "
            f"{_pct(s['sft_win_rate_vs_base'])} | {_pct(_dpo_vs_sft(s))} | {faithful} | {shift} | {kept} | "
            f"{dpo.get('train_seconds', 0):.0f} |"
        )
    lines += ["", "Per half (DPO vs base by the raters; faithfulness change DPO minus base, in points):", ""]
    lines += [
        "| half | tastes | worst | median | DPO beats SFT | worst faithfulness change |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for half in ("tuning", "held-out"):
        rows = [results[t] for t in order if half_of(t) == half]
        if not rows:
            continue
        rates = [r["win_rate_vs_base"] for r in rows]
        beats = sum(1 for r in rows if _dpo_vs_sft(r) > 0.5)
        drops = [100 * (r["faithfulness_dpo"] - r["faithfulness_base"]) for r in rows]
        lines.append(
            f"| {half} | {len(rows)} | {min(rates):.1%} | {median(rates):.1%} | {beats}/{len(rows)} | "
            f"{min(drops):+.1f} |"
        )
    for entry in extra_objectives:
        lines += [
            "",
            f"`{entry}` on the same cells (vs base by the raters): "
            + ", ".join(f"{t} {_pct(_row_of(results[t], entry, 'win_rate_vs_base'))}" for t in order),
        ]
    return "\n".join(lines)


def _row_of(summary: dict[str, Any], entry: str, key: str) -> float | None:
    for row in summary["objectives"].values():
        if row["entry"] == entry:
            return row.get(key)
    return None


def curves_table(curves: dict[str, dict[str, Any]]) -> str:
    """Per taste and objective entry: win rate and validation implicit accuracy at every step;
    then, per entry, each rule's and each fixed step's worst case over the tuning half."""
    lines = [
        "| taste | objective | step: raters win rate / oracle / faithful / validation implicit acc. | kept |",
        "| --- | --- | --- | ---: |",
    ]
    by_entry: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for taste, entries in curves.items():
        for curve in entries.values():
            points = sorted(curve["points"], key=lambda p: p["step"])
            cells = "; ".join(
                f"{p['step']}: {p['win_rate_vs_base']:.1%} / {p['oracle_win_rate_vs_base']:.1%} / "
                f"{p['faithfulness']:.1%} / {p['validation_implicit_accuracy']:.1%}"
                for p in points
            )
            lines.append(f"| `{taste}` | `{curve['entry']}` | {cells} | {curve['selected_step']} |")
            by_entry.setdefault(curve["entry"], {})[taste] = points
    lines += ["", "What each rule would have kept (DPO vs base by the raters: worst / median over the tastes):", ""]
    lines += ["| objective | rule | worst | median | tastes |", "| --- | --- | ---: | ---: | ---: |"]
    from prefdiff.train.selection import EvalPoint, choose_step

    for entry, tastes in by_entry.items():
        steps = sorted({p["step"] for points in tastes.values() for p in points})
        rules: dict[str, list[float]] = {}
        for rule in ("best", "one_se"):
            for points in tastes.values():
                pairs = points[0].get("validation_pairs", 128)
                chosen = choose_step(
                    [EvalPoint(p["step"], p["validation_implicit_accuracy"], pairs) for p in points], rule
                ).step
                rules.setdefault(f"select_step={rule}", []).append(
                    next(p["win_rate_vs_base"] for p in points if p["step"] == chosen)
                )
        for step in steps:
            values = [p["win_rate_vs_base"] for points in tastes.values() for p in points if p["step"] == step]
            if len(values) == len(tastes):
                rules[f"fixed {step} steps"] = values
        for rule, values in rules.items():
            lines.append(f"| `{entry}` | {rule} | {min(values):.1%} | {median(values):.1%} | {len(values)} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tastes", nargs="+", default=[*TUNING_TASTES, *HELDOUT_TASTES])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--objectives", nargs="*", default=[], help="toy.objectives entries beside dpo and sft")
    parser.add_argument("--out", type=Path, default=Path("runs/bench_tastes"))
    parser.add_argument("--jobs", type=int, default=1, help="quickstarts run side by side (one core each)")
    parser.add_argument("--docs", type=Path, default=Path(__file__).resolve().parents[1] / "docs" / "tastes.md")
    parser.add_argument(
        "--extra",
        nargs="*",
        default=["toy.layouts_per_caption=0"],
        help="overrides passed to every quickstart (default: no colour-layout section, which this table does not use)",
    )
    parser.add_argument("--curves", action="store_true", help="also score every snapshot each run kept")
    parser.add_argument("--curves-of", default=None, help=argparse.SUPPRESS)  # one cell's curves (a worker)
    parser.add_argument("--report-only", action="store_true", help="rebuild the tables from the cells in --out")
    args = parser.parse_args()
    if args.curves_of:
        curves = score_curves(args.out / args.curves_of, args.curves_of, args.extra)
        (args.out / args.curves_of / "curves.json").write_text(json.dumps(curves, indent=2) + "\n")
        return
    objectives = ["dpo", "sft", *args.objectives]
    args.out.mkdir(parents=True, exist_ok=True)
    runs: list[dict[str, Any]] = []
    if not args.report_only:
        shared = prepare_shared(args.out, args.seed, args.extra)
        for taste in args.tastes:
            _seed_cell(args.out, shared, args.out / taste)
        with ThreadPoolExecutor(max_workers=args.jobs) as pool:
            futures = [pool.submit(run_cell, args.out, t, args.seed, objectives, args.extra) for t in args.tastes]
            runs += [f.result() for f in futures]
    results = {}
    for taste in args.tastes:
        summary_file = args.out / taste / "summary.json"
        if summary_file.is_file():
            results[taste] = json.loads(summary_file.read_text())
    curves: dict[str, Any] = {}
    raw_file = args.out / "bench_tastes.json"
    if args.curves:
        if args.report_only and raw_file.is_file():
            curves = json.loads(raw_file.read_text()).get("curves", {})
        else:
            # one process per cell: model loading is not thread-safe (accelerate's empty-weights context is global)
            with ThreadPoolExecutor(max_workers=args.jobs) as pool:
                futures = {t: pool.submit(curves_in_subprocess, args.out, t, args.extra) for t in results}
                curves = {t: f.result() for t, f in futures.items()}
    command = "python benchmarks/bench_tastes.py " + " ".join(
        [f"--tastes {' '.join(args.tastes)}"]
        + ([f"--objectives {' '.join(args.objectives)}"] if args.objectives else [])
        + ([f"--extra {' '.join(args.extra)}"] if args.extra else [])
        + (["--curves"] if args.curves else [])
    )
    raw = {"command": command, "runs": runs, "cells": results, "curves": curves}
    raw_file.write_text(json.dumps(raw, indent=2) + "\n")
    if results:
        write_between(args.docs, BEGIN, END, table(results, command, args.objectives), "Tastes", "The suite")
    if curves:
        write_between(args.docs, CURVES_BEGIN, CURVES_END, curves_table(curves), "Tastes", "Curves")
    print(f"table: {args.docs}; raw: {raw_file}")
    failed = [r["taste"] for r in runs if r["rc"] != 0]
    if failed:
        sys.exit(f"failed cells: {', '.join(failed)} (see their logs)")


if __name__ == "__main__":
    main()
