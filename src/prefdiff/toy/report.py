"""DIR/report.html of the quickstart: the headline, win-rate bars with intervals, the leaderboard
of every trained objective, a table of what changed, base / DPO / SFT side by side on held-out
captions, the same captions from colour layouts (layout / base / DPO), and the training curves
of every objective on shared axes (PNGs in DIR/plots)."""

from __future__ import annotations

import html
import os
from pathlib import Path
from typing import Any

from prefdiff.evaluate.plots import curve_plot, win_rate_plot
from prefdiff.manifests import read_manifest
from prefdiff.runlog import METRICS_FILE, read_metrics

PLOTS = "plots"


def _bars(out: Path, summary: dict[str, Any]) -> str:
    h2h = summary["head_to_head"]
    rows = []
    for label, key in (("DPO vs base", "dpo_vs_base"), ("SFT vs base", "sft_vs_base"), ("DPO vs SFT", "dpo_vs_sft")):
        for judge in ("raters", "oracle"):
            result = h2h[key][judge]
            rows.append((f"{label} ({judge})", result["win_rate"], *result["win_rate_ci"]))
    win_rate_plot(out / PLOTS / "win_rates.png", rows)
    return f'<img class=plot src="{PLOTS}/win_rates.png" alt="win rates with 95% intervals">'


def _leaderboard(out: Path, summary: dict[str, Any]) -> str:
    """Every objective against the base (raters' majority, with its interval) as bars and a table."""
    rows = summary["objectives"]
    bars = [(row["entry"], row["win_rate_vs_base"], *row["win_rate_vs_base_ci"]) for row in rows.values()]
    win_rate_plot(out / PLOTS / "leaderboard.png", bars, "against the base, by the raters' majority")

    def pct(value: float | None) -> str:
        return "–" if value is None else f"{value:.1%}"

    cells = []
    for row in rows.values():
        low, high = row["win_rate_vs_base_ci"]
        figures = [
            f"{row['win_rate_vs_base']:.1%} ({low:.1%}–{high:.1%})",
            pct(row["oracle_win_rate_vs_base"]),
            pct(row["win_rate_vs_dpo"]),
            pct(row["faithfulness"]),
            pct(row["implicit_accuracy_heldout"]),
            "–" if row["train_seconds"] is None else f"{row['train_seconds']:.0f}",
        ]
        cells.append(
            f"<tr><td><code>{html.escape(row['entry'])}</code></td>"
            + "".join(f"<td>{f}</td>" for f in figures)
            + "</tr>"
        )
    header = (
        "<tr><th>objective</th><th>vs base, raters (95% CI)</th><th>vs base, oracle</th><th>vs DPO, raters</th>"
        "<th>faithful</th><th>implicit acc. (held-out)</th><th>train s</th></tr>"
    )
    return (
        f'<img class=plot src="{PLOTS}/leaderboard.png" alt="leaderboard">'
        f"<table class=m>{header}{''.join(cells)}</table>"
    )


def _metrics_table(summary: dict[str, Any]) -> str:
    models = summary["models"]
    fields = [
        ("faithfulness (colour + shape)", "faithfulness", "{:.1%}"),
        ("colour matches caption", "colour_match", "{:.1%}"),
        ("shape matches caption", "shape_match", "{:.1%}"),
        ("mean radius (fraction of side)", "radius_mean", "{:.3f}"),
        ("mean distance from centre", "centre_distance_mean", "{:.3f}"),
        ("mean background brightness", "background_mean", "{:.3f}"),
    ]
    scores = {
        "base": summary["oracle_score_base"],
        "dpo": summary["oracle_score_dpo"],
        "sft": summary["oracle_score_sft"],
    }
    rows = [
        f"<tr><td>mean oracle score</td>{''.join(f'<td>{scores[m]:.3f}</td>' for m in ('base', 'dpo', 'sft'))}</tr>"
    ]
    for label, key, fmt in fields:
        cells = "".join(f"<td>{fmt.format(models[m][key])}</td>" for m in ("base", "dpo", "sft"))
        rows.append(f"<tr><td>{label}</td>{cells}</tr>")
    return f"<table class=m><tr><th></th><th>base</th><th>DPO</th><th>SFT</th></tr>{''.join(rows)}</table>"


def _grid(out: Path, samples: dict[str, Path], per_caption: int = 4) -> str:
    manifests = {name: read_manifest(run) for name, run in samples.items()}
    prompts = sorted({k[0] for k in manifests["base"]})
    rows = []
    for p in prompts:
        keys = sorted(k for k in manifests["base"] if k[0] == p)[:per_caption]
        cells = []
        for name in ("base", "dpo", "sft"):
            images = "".join(
                f'<img src="{html.escape(os.path.relpath(samples[name] / manifests[name][k].file, out))}" '
                f'title="seed {manifests[name][k].seed}">'
                for k in keys
            )
            cells.append(f"<td>{images}</td>")
        rows.append(f"<tr><td>{html.escape(manifests['base'][keys[0]].prompt)}</td>{''.join(cells)}</tr>")
    return (
        f"<table class=g><tr><th>held-out caption</th><th>base</th><th>DPO</th><th>SFT</th></tr>{''.join(rows)}</table>"
    )


def _layouts_section(out: Path, summary: dict[str, Any], samples: dict[str, Path], per_caption: int = 3) -> str:
    """ "From colour layouts": the win rate of DPO over base from the same layouts and seeds, the
    faithfulness of both, and layout | base | DPO side by side."""
    section = summary.get("from_layouts")
    if not section or not samples:
        return ""
    manifests = {name: read_manifest(run) for name, run in samples.items()}
    by_caption: dict[str, list[tuple[int, int]]] = {}
    for key, image in sorted(manifests["base"].items()):
        by_caption.setdefault(image.prompt, []).append(key)
    rows = []
    for caption, keys in by_caption.items():
        for key in keys[:per_caption]:
            layout = manifests["base"][key].init_image
            cells = [f'<img src="{html.escape(os.path.relpath(layout, out))}" title="layout">' if layout else "–"]
            cells += [
                f'<img src="{html.escape(os.path.relpath(samples[name] / manifests[name][key].file, out))}" '
                f'title="seed {manifests[name][key].seed}">'
                for name in ("base", "dpo")
            ]
            rows.append(f"<tr><td>{html.escape(caption)}</td>{''.join(f'<td>{c}</td>' for c in cells)}</tr>")
    low, high = section["win_rate_vs_base_ci"]
    return f"""<h2>From colour layouts</h2>
<p>Each held-out caption with {section["layouts_per_caption"]} colour layouts (a soft blob of the caption's colour on a
plain field); base and DPO model edit the same layout from the same seed (SDEdit, strength {section["strength"]},
{section["sampler_steps"]} sampler steps). DPO wins <b>{section["win_rate_vs_base"]:.1%}</b> of
{section["comparisons"]} comparisons by the raters' majority (95% CI {low:.1%}–{high:.1%}),
{section["oracle_win_rate_vs_base"]:.1%} by the oracle. Faithfulness: base {section["faithfulness_base"]:.1%},
DPO {section["faithfulness_dpo"]:.1%}.</p>
<table class=g><tr><th>caption</th><th>layout</th><th>base</th><th>DPO</th></tr>{"".join(rows)}</table>"""


def _curves(out: Path, runs: dict[str, Path], labels: dict[str, str]) -> str:
    """Loss, implicit accuracy and margin of every run, one line each (smoothed over the raw),
    each labelled by its ``toy.objectives`` entry."""
    metrics = {
        labels.get(name, name): read_metrics(run / METRICS_FILE)
        for name, run in runs.items()
        if (run / METRICS_FILE).is_file()
    }
    parts = []
    for key in ("loss", "implicit_acc", "reward_margin"):
        if curve_plot(out / PLOTS / f"{key}.png", metrics, key):
            parts.append(f'<img class=plot src="{PLOTS}/{key}.png" alt="{key}">')
    return "".join(parts)


def write_quickstart_report(
    out: Path,
    summary: dict[str, Any],
    samples: dict[str, Path],
    runs: dict[str, Path],
    layout_samples: dict[str, Path] | None = None,
) -> Path:
    low, high = summary["win_rate_vs_base_ci"]
    votes = summary["votes"]["train"]
    seconds = ", ".join(f"{k} {v:.0f} s" for k, v in summary["stage_seconds"].items())
    if summary.get("reused_stages"):
        seconds += f" (reused from an earlier run: {', '.join(summary['reused_stages'])})"
    compare_link = html.escape(os.path.relpath(summary["compare_report"], out))
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>prefdiff quickstart</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}}
img{{width:64px;image-rendering:pixelated;margin:1px}}
td,th{{padding:4px 8px;text-align:left;vertical-align:top}} table.m td:not(:first-child){{text-align:right}}
img.plot{{width:640px;image-rendering:auto;display:block}}
table{{border-collapse:collapse}} tr:nth-child(even){{background:#f4f4f4}} .big{{font-size:1.3em}}</style></head><body>
<h1>Diffusion-DPO in the toy world</h1>
<p class=big>The DPO-tuned model wins <b>{summary["win_rate_vs_base"]:.1%}</b> of {summary["comparisons"]} held-out
comparisons
against the base model by the raters' majority (95% CI {low:.1%}–{high:.1%}), and
{summary["oracle_win_rate_vs_base"]:.1%} by the oracle.
The SFT-on-winners baseline wins {summary["sft_win_rate_vs_base"]:.1%}.</p>
<p>Held-out captions name colour–shape combinations that never occur in the preference data. Every comparison
puts two images made from the same caption and the same seed side by side; {summary["votes"]["raters"]} simulated
raters vote
(each agrees with the oracle <code>{html.escape(summary["oracle"])}</code> on {votes["single_rater_agreement"]:.0%}
of base-model pairs;
their majority on {summary["rater_oracle_agreement"]:.0%}); ties count half. Implicit reward accuracy of the DPO model
on {summary["heldout_pairs"]} held-out labelled pairs: {summary["implicit_accuracy_heldout"]:.1%}.</p>
<h2>Win rates</h2>{_bars(out, summary)}
<h2>Objectives</h2>{_leaderboard(out, summary)}
<h2>What changed</h2>{_metrics_table(summary)}
<h2>Side by side (same caption, same seed)</h2>{_grid(out, samples)}
<p>Every comparison with its oracle scores: <a href="{compare_link}">DPO vs base report</a>.</p>
{_layouts_section(out, summary, layout_samples or {})}
<h2>Training</h2><p>The raw values faint, their moving average bold (train.log_every steps apart).</p>
{_curves(out, runs, {name: row["entry"] for name, row in summary["objectives"].items()})}
<p><small>Stage times: {html.escape(seconds)}.</small></p>
</body></html>"""
    path = out / "report.html"
    path.write_text(page)
    return path
