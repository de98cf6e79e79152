"""`prefdiff compare` on two generation runs of the tiny pipeline with a python: scorer."""

from __future__ import annotations

import json
import re
import sys
import textwrap

import pytest

from prefdiff.errors import ConfigError, DataError
from prefdiff.evaluate.compare import compare_runs
from prefdiff.evaluate.generate import SamplerSettings, generate_prompt_set


@pytest.fixture(scope="module")
def runs(tiny_sd, tmp_path_factory):
    root = tmp_path_factory.mktemp("compare")
    prompts = root / "prompts.tsv"
    prompts.write_text("Prompt\tCategory\na red circle\tshapes\na blue square\tshapes\na cat\tanimals\n")
    settings = SamplerSettings(steps=2, resolution=32)
    generate_prompt_set(tiny_sd, prompts, 2, root / "a", settings=settings)
    generate_prompt_set(tiny_sd, prompts, 2, root / "b", settings=SamplerSettings(steps=3, resolution=32))
    generate_prompt_set(tiny_sd, prompts, 2, root / "other_seed", settings=settings, base_seed=7)
    (root / "scorer_mod.py").write_text(
        textwrap.dedent("""
        def brightness(image, prompt):
            return sum(image.convert("L").getdata()) / (image.width * image.height)
    """)
    )
    sys.path.insert(0, str(root))
    yield root
    sys.path.remove(str(root))


def test_compare_writes_summary_and_report(runs):
    """Runs a and b differ in their step count (2 and 3), which makes their images differ: compare
    refuses that unless told, then pairs them."""
    out = runs / "cmp"
    with pytest.raises(DataError, match="sampler setting 'steps' 2 in A and 3 in B"):
        compare_runs(runs / "a", runs / "b", "python:scorer_mod:brightness", out)
    summary = compare_runs(runs / "a", runs / "b", "python:scorer_mod:brightness", out, allow_sampler_mismatch=True)
    saved = json.loads((out / "summary.json").read_text())
    for key in ("win_rate", "win_rate_ci", "wins", "losses", "ties", "mean_score_a", "mean_score_b"):
        assert key in saved
    assert saved["wins"] + saved["losses"] + saved["ties"] == saved["n"] == 6
    assert saved["win_rate"] == pytest.approx((saved["wins"] + saved["ties"] / 2) / 6)
    assert set(saved["by_category"]) == {"shapes", "animals"} and saved["by_category"]["animals"]["n"] == 2
    scores = [json.loads(line) for line in (out / "scores.jsonl").read_text().splitlines()]
    assert saved["mean_score_a"] == pytest.approx(sum(s["score_a"] for s in scores) / 6)
    assert summary == saved
    page = (out / "report.html").read_text()
    sources = re.findall(r'<img src="([^"]+)"', page)
    assert len(sources) == 12 and all((out / src).resolve().is_file() for src in sources)
    assert '<img class=plot src="win_rate.png"' in page and (out / "win_rate.png").is_file()  # bars with intervals


def test_compare_records_where_the_scorer_ran_and_refuses_fp16_on_the_cpu(runs):
    import torch

    spec = "python:scorer_mod:brightness"
    summary = compare_runs(runs / "a", runs / "a", spec, runs / "bf16", device="cpu", dtype="bf16")
    assert summary["device"] == "cpu" and summary["dtype"] == "bf16"
    assert json.loads((runs / "bf16" / "summary.json").read_text())["dtype"] == "bf16"
    assert summary["ties"] == summary["n"] == 6  # a run against itself
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="--dtype fp16 needs a GPU"):
            compare_runs(runs / "a", runs / "a", spec, runs / "fp16", dtype="fp16")
        assert not (runs / "fp16").exists()


def test_unpaired_runs_are_refused(runs):
    with pytest.raises(DataError, match="not paired: image \\(0, 0\\) has seed"):
        compare_runs(runs / "a", runs / "other_seed", "python:scorer_mod:brightness", runs / "x")
    with pytest.raises(DataError, match="no manifest.jsonl"):
        compare_runs(runs / "a", runs, "python:scorer_mod:brightness", runs / "y")


def _label_by_brightness(tiny_sd, runs, out, **options):
    """label-ai on the 3 test prompts, 2 sampler steps, brightness as the AI rater."""
    from prefdiff.evaluate.ai_feedback import label_with_ai

    settings = SamplerSettings(steps=2, resolution=32)
    return label_with_ai(
        tiny_sd, runs / "prompts.tsv", "python:scorer_mod:brightness", out, settings=settings, **options
    )


def test_label_ai_writes_pickapic_pairs_the_reader_takes(tiny_sd, runs):
    from prefdiff.config import load_config
    from prefdiff.data import ReadReport, iter_pairs, open_image

    out = runs / "ai"
    counts = _label_by_brightness(tiny_sd, runs, out, tie_threshold=0.0)
    assert counts["pairs"] == 3
    report = ReadReport()
    pairs = list(iter_pairs(load_config(None, [f"data.path={out / 'pairs.parquet'}"]).data, report))
    assert len(pairs) == 3 - counts["ties"]

    def brightness(image):
        return sum(image.convert("L").getdata()) / (image.width * image.height)

    for pair in pairs:  # the winner is the brighter image
        assert brightness(open_image(pair.winner)) > brightness(open_image(pair.loser))
    assert all(pair.preference == 1.0 for pair in pairs)  # no temperature: hard labels


def test_label_ai_temperature_writes_bradley_terry_soft_labels(tiny_sd, runs):
    """With --temperature T, preference_0 = sigmoid((score_0 - score_1) / T) per row, and the
    reader gives each winner its probability (>= 0.5)."""
    import math

    import pyarrow.parquet as pq

    from prefdiff.config import load_config
    from prefdiff.data import ReadReport, iter_pairs

    out = runs / "ai_soft"
    counts = _label_by_brightness(tiny_sd, runs, out, temperature=5.0)
    assert counts["temperature"] == 5.0
    rows = pq.read_table(out / "pairs.parquet").to_pylist()
    for row in rows:
        expected = 1.0 / (1.0 + math.exp(-(row["score_0"] - row["score_1"]) / 5.0))
        assert row["preference_0"] == pytest.approx(expected)
    data = load_config(None, [f"data.path={out / 'pairs.parquet'}", "data.drop_ties=false"]).data
    pairs = list(iter_pairs(data, ReadReport()))
    assert sorted(p.preference for p in pairs) == pytest.approx(
        sorted(max(r["preference_0"], 1 - r["preference_0"]) for r in rows)
    )
    with pytest.raises(ConfigError, match="--temperature must be > 0"):
        _label_by_brightness(tiny_sd, runs, out, temperature=0.0)
