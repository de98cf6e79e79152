"""A shrunken quickstart on the shipped toy base: every artefact, every summary field, stage
reuse, and a custom oracle that redoes the votes but reuses the pairs."""

import json
import math
import re

import pytest
from typer.testing import CliRunner

from prefdiff.cli import app
from prefdiff.toy.quickstart import SHIPPED_BASE, SHIPPED_BASES

pytestmark = pytest.mark.slow

SMALL = [
    "toy.train_pairs=24",
    "toy.heldout_pairs=8",
    "toy.validation_pairs=8",
    "toy.eval_images_per_caption=2",
    "toy.sample_steps=4",
    "train.max_steps=4",
    "train.batch_size=4",
    "toy.layouts_per_caption=1",
]
FIELDS = {
    "win_rate_vs_base",
    "win_rate_vs_base_ci",
    "oracle_win_rate_vs_base",
    "sft_win_rate_vs_base",
    "rater_oracle_agreement",
    "faithfulness_base",
    "faithfulness_dpo",
    "faithfulness_sft",
    "oracle_score_base",
    "oracle_score_dpo",
    "implicit_accuracy_heldout",
    "stage_seconds",
}
STAGES = {"pairs", "votes", "cache", "dpo", "sft", "generate", "layouts", "evaluate"}
LAYOUT_FIELDS = {
    "strength",
    "sampler_steps",
    "comparisons",
    "layouts_per_caption",
    "win_rate_vs_base",
    "win_rate_vs_base_ci",
    "oracle_win_rate_vs_base",
    "faithfulness_base",
    "faithfulness_dpo",
    "oracle_score_base",
    "oracle_score_dpo",
    "head_to_head",
    "models",
}


def run(out, *overrides):
    result = CliRunner().invoke(app, ["quickstart", "--out", str(out), *SMALL, *overrides])
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result.output


def test_shipped_base_is_a_pipeline():
    assert (SHIPPED_BASE / "model_index.json").is_file()
    assert sum(p.stat().st_size for p in SHIPPED_BASE.rglob("*")) < 16 * 2**20


def check_layouts(out, summary):
    """The "from colour layouts" section: six layouts (one per held-out caption), base and DPO
    edited each from the same layout and seed, its summary fields and its report table."""
    layouts = summary["from_layouts"]
    assert LAYOUT_FIELDS <= layouts.keys()
    for model in layouts["models"].values():  # how far each model moved from the layouts
        assert 0.0 <= model["layout_centre_shift"] < 1.5 and -1.0 < model["layout_radius_change"] < 1.0
    assert layouts["comparisons"] == 6 and layouts["strength"] == 0.85 and layouts["sampler_steps"] == 4
    for key in ("win_rate_vs_base", "oracle_win_rate_vs_base", "faithfulness_base", "faithfulness_dpo"):
        assert 0.0 <= layouts[key] <= 1.0, key
    low, high = layouts["win_rate_vs_base_ci"]
    assert low <= layouts["win_rate_vs_base"] <= high
    rows = {name: [json.loads(line) for line in (out / "samples" / f"layouts_{name}" / "manifest.jsonl").open()]
            for name in ("base", "dpo")}  # fmt: skip
    assert len(rows["base"]) == 6 and len(list((out / "layouts" / "images").iterdir())) == 6
    for a, b in zip(rows["base"], rows["dpo"], strict=True):
        assert a["init_image"] == b["init_image"] and a["seed"] == b["seed"] and a["strength"] == 0.85
        assert a["init_image"].startswith(str(out / "layouts" / "images"))
    assert rows["dpo"][0]["lora"] and rows["base"][0]["lora"] is None
    report = (out / "report.html").read_text()
    assert "From colour layouts" in report and "layouts/images/c00_0000.png" in report
    assert "samples/layouts_dpo/" in report and f"{layouts['win_rate_vs_base']:.1%}" in report


def check_artefacts(out, output, family, stages=STAGES):
    """Every artefact and summary field of a shrunken quickstart in ``out``; returns the summary."""
    assert str(out / "report.html") in output and str(out / "summary.json") in output
    summary = json.loads((out / "summary.json").read_text())
    assert FIELDS <= summary.keys()
    assert summary["family"] == family
    assert set(summary["stage_seconds"]) == stages
    if "layouts" in stages:
        check_layouts(out, summary)
    else:
        assert summary["from_layouts"] is None and "From colour layouts" not in (out / "report.html").read_text()
    for key in FIELDS - {"win_rate_vs_base_ci", "stage_seconds", "oracle_score_base", "oracle_score_dpo"}:
        assert 0.0 <= summary[key] <= 1.0 and not math.isnan(summary[key]), key
    for key in ("oracle_score_base", "oracle_score_dpo"):  # faithfulness (0..1) + taste (0..1)
        assert 0.0 <= summary[key] <= 2.0, key
    low, high = summary["win_rate_vs_base_ci"]
    assert low <= summary["win_rate_vs_base"] <= high
    assert summary["comparisons"] == 6 * 2
    for path in (
        "votes/train.parquet",
        "votes/heldout.parquet",
        "votes/votes.json",
        "cache/train/cache_info.json",
        "dpo/lora/pytorch_lora_weights.safetensors",
        "sft/lora/pytorch_lora_weights.safetensors",
        "samples/dpo/manifest.jsonl",
        "compare/dpo_vs_base/report.html",
    ):
        assert (out / path).is_file(), path
    report = (out / "report.html").read_text()
    assert "samples/dpo/" in report and f"{summary['win_rate_vs_base']:.1%}" in report
    votes = json.loads((out / "votes" / "votes.json").read_text())
    assert votes["train"]["pairs"] == 24 and votes["temperature"] > 0
    import pyarrow.parquet as pq

    for row in pq.read_table(out / "votes" / "train.parquet", columns=["label_0", "preference_0"]).to_pylist():
        # the raters' vote fraction (a tie vote half) lies on the majority's side, in steps of 1/(2 raters)
        side = {1.0: row["preference_0"] > 0.5, 0.0: row["preference_0"] < 0.5, 0.5: row["preference_0"] == 0.5}
        assert side[row["label_0"]] and (row["preference_0"] * 10) == round(row["preference_0"] * 10)
    return summary


def test_quickstart_writes_every_artefact_and_reuses_its_stages(tmp_path):
    out = tmp_path / "qs"
    summary = check_artefacts(out, run(out), "sd")

    weights = out / "dpo" / "lora" / "pytorch_lora_weights.safetensors"
    mtime = weights.stat().st_mtime_ns
    again = run(out)
    for stage in ("pairs", "votes", "cache", "dpo", "sft", "samples/base", "samples/dpo", "samples/sft", "layouts"):
        assert f"{stage}: reusing" in again, stage
    assert "samples/layouts_dpo: reusing" in again
    assert weights.stat().st_mtime_ns == mtime
    assert {"pairs", "votes", "cache", "dpo", "sft"} <= set(
        json.loads((out / "summary.json").read_text())["reused_stages"]
    )
    assert json.loads((out / "summary.json").read_text())["win_rate_vs_base"] == summary["win_rate_vs_base"]

    oracle_file = tmp_path / "taste.py"
    oracle_file.write_text(
        "def prefers_red(image, caption):\n    return float(image.convert('RGB').getpixel((16, 16))[0])\n"
    )
    changed = run(out, f"toy.oracle={oracle_file}:prefers_red")
    assert "pairs: reusing" in changed and "samples/base: reusing" in changed
    assert "votes: reusing" not in changed and "dpo: reusing" not in changed
    assert json.loads((out / "summary.json").read_text())["oracle"] == f"python:{oracle_file}:prefers_red"


def test_quickstart_chooses_the_kept_step_on_its_validation_pairs_and_records_it(tmp_path):
    from prefdiff.train.selection import EvalPoint, choose_step

    out = tmp_path / "qs"
    run(out, "train.max_steps=6", "train.eval_every=2", "train.select_step=one_se", "toy.layouts_per_caption=0")
    summary = json.loads((out / "summary.json").read_text())
    assert (out / "votes" / "validation.parquet").is_file() and (out / "cache" / "validation").is_dir()
    for name in ("dpo", "sft"):
        rows = [json.loads(line) for line in (out / name / "eval.jsonl").read_text().splitlines()]
        assert [r["step"] for r in rows] == [2, 4, 6]
        assert {r["eval_pairs"] for r in rows} == {
            json.loads((out / "votes" / "votes.json").read_text())["validation"]["pairs"] - _ties(out)
        }
        expected = choose_step([EvalPoint(r["step"], r["eval_implicit_acc"], r["eval_pairs"]) for r in rows], "one_se")
        row = summary["objectives"][name]
        assert row["selected_step"] == expected.step and row["selection_rule"] == "one_se"
        assert row["validation_implicit_accuracy"] == pytest.approx(expected.accuracy)
    assert summary["selected_step"] == summary["objectives"]["dpo"]["selected_step"]
    assert summary["recipe"]["train"]["select_step"] == "one_se"
    # without validation pairs there is nothing to evaluate on: refused before any work
    result = CliRunner().invoke(
        app, ["quickstart", "--out", str(tmp_path / "none"), "toy.validation_pairs=0", "train.eval_every=2"]
    )
    assert result.exit_code != 0 and "toy.validation_pairs" in str(result.exception)


def _ties(out):
    return json.loads((out / "votes" / "votes.json").read_text())["validation"]["ties"]


def test_few_step_quickstart_samples_and_trains_on_four_timesteps(tmp_path):
    """The issue's command, shrunken: 4 sampler steps with trailing spacing, no guidance, training
    on the four timesteps; every artefact records it, and no layout section when it is off."""
    out = tmp_path / "turbo"
    few_step = ("toy.sampler_steps=4", "toy.guidance=0", "train.timesteps=[249,499,749,999]")
    output = run(out, *few_step, "toy.layouts_per_caption=0")
    summary = check_artefacts(out, output, "sd", stages=STAGES - {"layouts"})
    assert summary["sampler"] == {
        "steps": 4,
        "guidance_scale": 0.0,
        "resolution": None,
        "negative_prompt": None,
        "scheduler": "default",
        "timestep_spacing": "trailing",
    }
    for run_dir in ("pairs/train", "samples/base", "samples/dpo"):
        row = json.loads((out / run_dir / "manifest.jsonl").open().readline())
        assert (row["steps"], row["guidance_scale"], row["timestep_spacing"]) == (4, 0.0, "trailing"), run_dir
    import yaml

    for name in ("dpo", "sft"):
        assert yaml.safe_load((out / name / "config.yaml").read_text())["train"]["timesteps"] == [249, 499, 749, 999]
    # the plain quickstart in the same folder samples otherwise: its pairs are redone, not reused
    assert "pairs: reusing" not in run(out, "toy.sampler_steps=4", "toy.layouts_per_caption=0")


OBJECTIVE_FIELDS = {
    "entry",
    "win_rate_vs_base",
    "win_rate_vs_base_ci",
    "oracle_win_rate_vs_base",
    "win_rate_vs_dpo",
    "win_rate_vs_dpo_ci",
    "oracle_win_rate_vs_dpo",
    "faithfulness",
    "implicit_accuracy_heldout",
    "train_seconds",
    "peak_memory_mb",
    "beta",
}


def test_quickstart_ranks_every_objective_of_toy_objectives_over_shared_stages(tmp_path):
    """toy.objectives adds runs beside dpo and sft: each gets a leaderboard row; a second list
    on the same --out reuses pairs, votes, cache, base samples and the runs it shares."""
    out = tmp_path / "qs"
    run(out, "toy.objectives=[dpo,sft,ipo]", "train.log_every=1")
    summary = json.loads((out / "summary.json").read_text())
    report = (out / "report.html").read_text()
    for plot in ("win_rates", "leaderboard", "loss", "implicit_acc", "reward_margin"):  # one line per objective
        assert f'src="plots/{plot}.png"' in report and (out / "plots" / f"{plot}.png").is_file(), plot
    assert "<code>ipo</code>" in report
    assert FIELDS <= summary.keys() and set(summary["objectives"]) == {"dpo", "sft", "ipo"}
    for name, row in summary["objectives"].items():
        assert OBJECTIVE_FIELDS <= row.keys(), name
        low, high = row["win_rate_vs_base_ci"]
        assert low <= row["win_rate_vs_base"] <= high and row["train_seconds"] > 0
    dpo, sft = summary["objectives"]["dpo"], summary["objectives"]["sft"]
    assert dpo["win_rate_vs_base"] == summary["win_rate_vs_base"] and dpo["win_rate_vs_dpo"] is None
    assert sft["win_rate_vs_base"] == summary["sft_win_rate_vs_base"]
    assert sft["win_rate_vs_dpo"] == pytest.approx(1.0 - summary["dpo_win_rate_vs_sft"])
    assert dpo["beta"] == summary["recipe"]["objective"]["beta"] and sft["beta"] is None
    assert dpo["implicit_accuracy_heldout"] == summary["implicit_accuracy_heldout"]
    assert (out / "ipo" / "lora" / "pytorch_lora_weights.safetensors").is_file()
    assert (out / "samples" / "ipo" / "manifest.jsonl").is_file()

    again = run(out, "toy.objectives=[dpo,sft,ipo,dpo@beta=auto]", "train.log_every=1")
    for stage in ("pairs", "votes", "cache", "dpo", "sft", "ipo", "samples/base", "samples/ipo"):
        assert f"{stage}: reusing" in again, stage
    summary = json.loads((out / "summary.json").read_text())
    auto = summary["objectives"]["dpo__beta-auto"]
    assert auto["entry"] == "dpo@beta=auto"
    assert auto["beta"] == json.loads((out / "dpo__beta-auto" / "auto_beta.json").read_text())["beta"]


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        ("[dpo,sft,nope]", r"entry 'nope' names no objective"),
        ("[dpo,ipo]", r"must hold plain dpo and sft"),
        ("[dpo,sft,mapo@beta=3]", r"entry 'mapo@beta=3': objective 'mapo' has no key beta"),
        ("[dpo,sft,dpo@label_smoothing=0.7]", r"entry 'dpo@label_smoothing=0.7'.*label_smoothing"),
        ("[dpo,sft,hinge@data.soft_labels=true]", r"entry 'hinge@data.soft_labels=true'.*takes hard labels only"),
        ("[dpo,sft,dpo@beta]", r"'beta' is not key=value"),
        ("[dpo,sft,dpo]", r"entries repeat \(dpo\)"),
    ],
)
def test_bad_objective_entries_are_refused_before_any_work(tmp_path, entries, message):
    result = CliRunner().invoke(app, ["quickstart", "--out", str(tmp_path / "qs"), f"toy.objectives={entries}"])
    said = result.output + str(result.exception)
    assert result.exit_code != 0 and re.search(message, said), said
    assert not (tmp_path / "qs").exists()


def test_flow_quickstart_writes_every_artefact(tmp_path):
    """toy.family=sd3: the shipped flow base, Flow-DPO and flow SFT with the sd3 recipe; the
    cache holds the base's 8 T5 tokens and 16 CLIP tokens, and the LoRAs load into the SD3 pipeline."""
    from diffusers import StableDiffusion3Pipeline

    out = tmp_path / "flow"
    summary = check_artefacts(out, run(out, "toy.family=sd3"), "sd3")
    assert (
        json.loads((out / "dpo" / "stage.json").read_text())["key"]["config"]["objective"]["beta"]
        == (summary["recipe"]["objective"]["beta"])
    )
    cache_info = json.loads((out / "cache" / "train" / "cache_info.json").read_text())
    assert cache_info["model"]["family"] == "sd3" and cache_info["model"]["max_sequence_length"] == "8"
    pipe = StableDiffusion3Pipeline.from_pretrained(str(SHIPPED_BASES["sd3"]))
    pipe.load_lora_weights(str(out / "dpo" / "lora"))


def test_shipped_flow_base_loads_as_the_sd3_backbone():
    from prefdiff.models import load_backbone

    base = SHIPPED_BASES["sd3"]
    assert sum(p.stat().st_size for p in base.rglob("*")) < 16 * 2**20
    backbone = load_backbone(base)
    assert backbone.family == "sd3" and backbone.flow_matching
    assert backbone.latent_shape(32) == (4, 8, 8) and backbone.max_sequence_length == 8
    report = json.loads((base / "pretrain_report.json").read_text())
    assert report["family"] == "sd3" and report["samples"]["images"] == 24 * 16
    assert report["scaling_factor"] == backbone.scaling_factor and report["shift_factor"] == backbone.shift_factor


def test_a_base_of_another_family_is_refused_before_any_work(tmp_path):
    result = CliRunner().invoke(
        app, ["quickstart", "--out", str(tmp_path / "qs"), "toy.family=sd3", f"toy.base={SHIPPED_BASE}"]
    )
    assert result.exit_code != 0 and "toy.family=sd" in str(result.exception)
    assert not (tmp_path / "qs").exists()


@pytest.mark.parametrize(
    ("override", "named"),
    [
        ("toy.raterz=3", "toy.raterz"),
        ("toy.train_pairs=0", "toy.train_pairs"),
        ("toy.raters=0", "toy.raters"),
        ("toy.rater_agreement=0.5", "toy.rater_agreement"),
        ("toy.seed=-1", "toy.seed"),
        ("toy.oracle=large-central", "toy.oracle"),
        ("toy.family=flux", "toy.family"),
        ("toy.oracle=no_such_module_here:fn", "toy.oracle"),
        ("objective.name=sft", "objective.name"),
        ("output_dir=elsewhere", "output_dir"),
        ("train.max_steps=0", "train.max_steps"),
        ("train.eval_data=somewhere", "train.eval_data"),
        ("toy.validation_pairs=-1", "toy.validation_pairs"),
    ],
)
def test_bad_overrides_name_the_key_before_any_work(tmp_path, override, named):
    result = CliRunner().invoke(app, ["quickstart", "--out", str(tmp_path / "qs"), override])
    assert result.exit_code != 0 and named in str(result.exception)
    assert not (tmp_path / "qs").exists()


def test_a_directory_the_quickstart_did_not_make_is_never_deleted(tmp_path):
    mine = tmp_path / "qs" / "pairs"
    mine.mkdir(parents=True)
    (mine / "precious.txt").write_text("keep me")
    result = CliRunner().invoke(app, ["quickstart", "--out", str(tmp_path / "qs"), *SMALL])
    assert result.exit_code != 0 and "was not made by the quickstart" in str(result.exception)
    assert (mine / "precious.txt").read_text() == "keep me"


def test_an_oracle_returning_nan_names_the_image(tmp_path):
    oracle_file = tmp_path / "broken.py"
    oracle_file.write_text("def score(image, caption):\n    return float('nan')\n")
    result = CliRunner().invoke(
        app,
        [
            "quickstart",
            "--out",
            str(tmp_path / "qs"),
            *SMALL,
            "toy.train_pairs=2",
            "toy.heldout_pairs=1",
            f"toy.oracle={oracle_file}:score",
        ],
    )
    assert result.exit_code != 0
    message = str(result.exception)
    assert "returned nan" in message and ".png" in message and "caption 'a red circle'" in message
