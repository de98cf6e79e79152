"""`prefdiff compare RUN_A RUN_B --scorer SPEC --out DIR`: a paired comparison of two generation
runs of the same prompt set, scored by a reward model, into summary.json and report.html.

A run is a folder written by `prefdiff generate` (its ``manifest.jsonl`` names each image's
prompt, indices and seed), read and paired by `prefdiff.manifests`. Comparisons pair images by
(prompt_index, image_index); runs made from different prompts, seeds or layouts are refused, since
they are not paired, and so are runs sampled differently unless ``--allow-sampler-mismatch``.
"""

from __future__ import annotations

import html
import json
import os
from pathlib import Path
from typing import Any

from prefdiff.errors import ConfigError
from prefdiff.evaluate.winrate import Comparison, summarize
from prefdiff.manifests import ImagePairs, ManifestImage, pair_runs
from prefdiff.runlog import METRICS_FILE, read_metrics


def score_runs(run_a: Path, run_b: Path, pairs: ImagePairs, scorer: Any, batch_size: int = 16) -> list[Comparison]:
    """Score every paired image (``pairs`` from :func:`pair_runs`) with ``scorer.score(images, prompts)``."""
    from PIL import Image
    from tqdm.auto import tqdm

    comparisons = []
    for start in tqdm(range(0, len(pairs), batch_size), desc="score", unit="batch", disable=len(pairs) <= batch_size):
        batch = pairs[start : start + batch_size]
        prompts = [ra.prompt for ra, _ in batch]
        scores = {}
        for side, run in (("a", run_a), ("b", run_b)):
            images = [Image.open(run / (ra if side == "a" else rb).file).convert("RGB") for ra, rb in batch]
            scores[side] = scorer.score(images, prompts)
        for (ra, _), score_a, score_b in zip(batch, scores["a"], scores["b"], strict=True):
            comparisons.append(Comparison(ra.prompt_index, ra.image_index, float(score_a), float(score_b), ra.category))
    return comparisons


def _training_curve(image: ManifestImage) -> list[dict[str, Any]]:
    """metrics.jsonl of the training run behind a manifest image (found through its LoRA or UNet)."""
    for weights in (image.lora, image.unet):
        if weights:
            metrics = Path(weights).parent / METRICS_FILE
            if metrics.is_file():
                return read_metrics(metrics)
    return []


def report_plots(out: Path, bars: list[tuple[str, float, float, float]], runs: dict[str, list[dict[str, Any]]]) -> str:
    """The report's figures as PNGs in ``out`` and their HTML: the win-rate bars with intervals,
    and, when training metrics are found, one plot per metric with the runs on shared axes."""
    from prefdiff.evaluate.plots import curve_plot, win_rate_plot

    win_rate_plot(out / "win_rate.png", bars)
    parts = ['<h2>Win rate of A over B</h2><img class=plot src="win_rate.png" alt="win rate with its interval">']
    curves = [key for key in ("loss", "implicit_acc", "reward_margin") if curve_plot(out / f"{key}.png", runs, key)]
    if curves:
        parts.append("<h2>Training</h2>")
        parts += [f'<img class=plot src="{key}.png" alt="{key}">' for key in curves]
    return "".join(parts)


def write_report(
    out: Path,
    run_a: Path,
    run_b: Path,
    pairs: ImagePairs,
    summary: dict[str, Any],
    comparisons: list[Comparison],
    max_rows: int = 24,
) -> Path:
    """report.html: bars with intervals, a side-by-side grid (images referenced by relative path),
    and the training curves of the runs behind A and B when their metrics are found."""
    by_key = {ra.key: (ra, rb) for ra, rb in pairs}
    bars = [("overall", summary["win_rate"], *summary["win_rate_ci"])]
    bars += [(name, c["win_rate"], *c["win_rate_ci"]) for name, c in summary["by_category"].items()]
    rows = []
    for comparison in comparisons[:max_rows]:
        ra, rb = by_key[(comparison.prompt_index, comparison.image_index)]
        src_a = html.escape(os.path.relpath(run_a / ra.file, out))
        src_b = html.escape(os.path.relpath(run_b / rb.file, out))
        mark_a = " class=win" if comparison.score_a > comparison.score_b else ""
        mark_b = " class=win" if comparison.score_b > comparison.score_a else ""
        rows.append(
            f"<tr><td>{html.escape(ra.prompt)}<br><small>seed {ra.seed}</small></td>"
            f'<td{mark_a}><img src="{src_a}"><br>{comparison.score_a:.3f}</td>'
            f'<td{mark_b}><img src="{src_b}"><br>{comparison.score_b:.3f}</td></tr>'
        )
    trained = {name: _training_curve(record) for name, record in (("A", pairs[0][0]), ("B", pairs[0][1]))}
    figures = report_plots(out, bars, {name: rows for name, rows in trained.items() if rows})
    low, high = summary["win_rate_ci"]
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>prefdiff compare</title>
<style>body{{font-family:sans-serif;max-width:1000px;margin:2em auto}} img{{width:192px;image-rendering:pixelated}}
img.plot{{width:640px;image-rendering:auto}}
td{{vertical-align:top;padding:6px;text-align:center}} td.win{{background:#e6f4ea}}
table{{border-collapse:collapse}}</style></head><body>
<h1>A wins {summary["win_rate"]:.1%} of {summary["n"]} paired comparisons</h1>
<p>A = <code>{html.escape(str(run_a))}</code>, B = <code>{html.escape(str(run_b))}</code>, scorer
<code>{html.escape(summary["scorer"])}</code>.
Wins {summary["wins"]}, losses {summary["losses"]}, ties {summary["ties"]} (counted half). Wilson 95%:
{low:.1%}–{high:.1%};
bootstrap over {summary["num_prompts"]} prompts:
{summary["win_rate_bootstrap_ci"][0]:.1%}–{summary["win_rate_bootstrap_ci"][1]:.1%}.
Mean score A {summary["mean_score_a"]:.4f}, B {summary["mean_score_b"]:.4f}.</p>
{figures}
<h2>Side by side (first {len(rows)})</h2><table><tr><th>prompt</th><th>A</th><th>B</th></tr>{"".join(rows)}</table>
</body></html>"""
    path = out / "report.html"
    path.write_text(page)
    return path


def compare_runs(
    run_a: Path,
    run_b: Path,
    scorer_spec: str,
    out: Path,
    tie_margin: float = 0.0,
    batch_size: int = 16,
    allow_sampler_mismatch: bool = False,
    device: str = "auto",
    dtype: str = "fp32",
) -> dict[str, Any]:
    """Score, summarise, write ``out/summary.json`` and ``out/report.html``; returns the summary.
    Runs sampled differently (steps, guidance, ...) are refused unless ``allow_sampler_mismatch``.
    The scorer runs on ``device`` (auto: the GPU when there is one) in ``dtype``. Under
    ``accelerate launch`` each process scores every n-th pair and the main one writes the
    summary (the others return {})."""
    from dataclasses import asdict

    from prefdiff.devices import process_state, resolve_device, resolve_dtype
    from prefdiff.evaluate.scorers import load_mixed
    from prefdiff.evaluate.sharded import gather_rows, my_share

    if batch_size < 1:
        raise ConfigError(f"--batch-size must be >= 1 (got {batch_size})")
    where = resolve_device(device)
    precision = resolve_dtype(dtype, where)
    pairs = pair_runs(run_a, run_b, allow_sampler_mismatch)  # refuse unpaired runs before loading a scorer
    state = process_state()
    if state is not None and device == "auto":
        where = state.device  # this process's own accelerator
    scorer = load_mixed(scorer_spec, where, precision)
    mine = [pair for _, pair in my_share(pairs, state)]
    comparisons = score_runs(run_a, run_b, mine, scorer, batch_size)
    if state is not None:
        rows = gather_rows(out, "scores", [asdict(c) for c in comparisons], state)
        if not state.is_main_process:
            return {}
        comparisons = sorted((Comparison(**row) for row in rows), key=lambda c: (c.prompt_index, c.image_index))
    return write_comparison(
        out, run_a, run_b, pairs, comparisons, scorer_spec, tie_margin, {"device": str(where), "dtype": dtype}
    )


def write_comparison(
    out: Path,
    run_a: Path,
    run_b: Path,
    pairs: ImagePairs,
    comparisons: list[Comparison],
    scorer_spec: str,
    tie_margin: float = 0.0,
    placement: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Summarise scored comparisons into ``out/summary.json``, ``out/scores.jsonl`` and
    ``out/report.html`` (with where the scorer ran, ``{"device", "dtype"}``, when given);
    returns the summary."""
    summary = summarize(comparisons, tie_margin)
    summary.update({"run_a": str(run_a), "run_b": str(run_b), "scorer": scorer_spec, "tie_margin": tie_margin})
    summary.update(placement or {})
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    (out / "scores.jsonl").write_text("".join(json.dumps(c.__dict__) + "\n" for c in comparisons))
    write_report(out, run_a, run_b, pairs, summary, comparisons)
    return summary
