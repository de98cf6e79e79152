"""A shrunken quickstart on the shipped toy base: every artefact, every summary field, stage
reuse, and a custom oracle that redoes the votes but reuses the pairs."""

import json
import math

import pytest
from typer.testing import CliRunner

from prefdiff.cli import app
from prefdiff.toy.quickstart import SHIPPED_BASE

pytestmark = pytest.mark.slow

SMALL = [
    "toy.train_pairs=24",
    "toy.heldout_pairs=8",
    "toy.eval_images_per_caption=2",
    "toy.sample_steps=4",
    "train.max_steps=4",
    "train.batch_size=4",
]
FIELDS = {
    "win_rate_vs_base", "win_rate_vs_base_ci", "oracle_win_rate_vs_base", "sft_win_rate_vs_base",
    "rater_oracle_agreement", "faithfulness_base", "faithfulness_dpo", "faithfulness_sft",
    "oracle_score_base", "oracle_score_dpo", "implicit_accuracy_heldout", "stage_seconds",
}
STAGES = {"pairs", "votes", "cache", "dpo", "sft", "generate", "evaluate"}


def run(out, *overrides):
    result = CliRunner().invoke(app, ["quickstart", "--out", str(out), *SMALL, *overrides])
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result.output


def test_shipped_base_is_a_pipeline():
    assert (SHIPPED_BASE / "model_index.json").is_file()
    assert sum(p.stat().st_size for p in SHIPPED_BASE.rglob("*")) < 16 * 2**20


def test_quickstart_writes_every_artefact_and_reuses_its_stages(tmp_path):
    out = tmp_path / "qs"
    output = run(out)
    assert str(out / "report.html") in output and str(out / "summary.json") in output
    summary = json.loads((out / "summary.json").read_text())
    assert FIELDS <= summary.keys()
    assert set(summary["stage_seconds"]) == STAGES
    for key in FIELDS - {"win_rate_vs_base_ci", "stage_seconds"}:
        assert 0.0 <= summary[key] <= 2.0 and not math.isnan(summary[key]), key
    low, high = summary["win_rate_vs_base_ci"]
    assert low <= summary["win_rate_vs_base"] <= high
    assert summary["comparisons"] == 6 * 2
    for path in ("votes/train.parquet", "votes/heldout.parquet", "votes/votes.json", "cache/train/cache_info.json",
                 "dpo/lora/pytorch_lora_weights.safetensors", "sft/lora/pytorch_lora_weights.safetensors",
                 "samples/dpo/manifest.jsonl", "compare/dpo_vs_base/report.html"):
        assert (out / path).is_file(), path
    report = (out / "report.html").read_text()
    assert "samples/dpo/" in report and f"{summary['win_rate_vs_base']:.1%}" in report
    votes = json.loads((out / "votes" / "votes.json").read_text())
    assert votes["train"]["pairs"] == 24 and votes["temperature"] > 0

    weights = out / "dpo" / "lora" / "pytorch_lora_weights.safetensors"
    mtime = weights.stat().st_mtime_ns
    again = run(out)
    for stage in ("pairs", "votes", "cache", "dpo", "sft", "samples/base", "samples/dpo", "samples/sft"):
        assert f"{stage}: reusing" in again, stage
    assert weights.stat().st_mtime_ns == mtime
    assert {"pairs", "votes", "cache", "dpo", "sft"} <= set(json.loads((out / "summary.json").read_text())["reused_stages"])
    assert json.loads((out / "summary.json").read_text())["win_rate_vs_base"] == summary["win_rate_vs_base"]

    oracle_file = tmp_path / "taste.py"
    oracle_file.write_text("def prefers_red(image, caption):\n    return float(image.convert('RGB').getpixel((16, 16))[0])\n")
    changed = run(out, f"toy.oracle={oracle_file}:prefers_red")
    assert "pairs: reusing" in changed and "samples/base: reusing" in changed
    assert "votes: reusing" not in changed and "dpo: reusing" not in changed
    assert json.loads((out / "summary.json").read_text())["oracle"] == f"python:{oracle_file}:prefers_red"


def test_bad_overrides_name_the_key(tmp_path):
    result = CliRunner().invoke(app, ["quickstart", "--out", str(tmp_path), "toy.raterz=3"])
    assert result.exit_code != 0 and "toy.raterz" in str(result.exception)
    result = CliRunner().invoke(app, ["quickstart", "--out", str(tmp_path), "toy.train_pairs=0"])
    assert "toy.train_pairs" in str(result.exception)
