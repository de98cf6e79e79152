"""The `prefdiff` CLI end to end on the tiny SD and SDXL pipelines, and its user-facing errors."""

from __future__ import annotations

import subprocess
import sys

import pytest


def prefdiff(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", "prefdiff", *args], capture_output=True, text=True, timeout=600)
    if check and result.returncode != 0:
        raise AssertionError(f"prefdiff {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result


def test_help_lists_every_subcommand():
    out = prefdiff("--help").stdout
    for command in ("train", "generate", "make-tiny", "quickstart", "config", "label", "reference"):
        assert command in out


@pytest.mark.parametrize("family", ["sd", "sdxl"])
def test_make_tiny_train_generate(family, tmp_path, shapes_parquet):
    model = tmp_path / "model"
    prefdiff("make-tiny", "--family", family, "--out", str(model))
    assert (model / "model_index.json").exists()
    run = tmp_path / "run"
    prefdiff(
        "train",
        "--config",
        "tiny_dpo_lora",
        f"model.path={model}",
        f"data.path={shapes_parquet}",
        f"output_dir={run}",
        "train.max_steps=2",
        "train.batch_size=2",
        "train.checkpoint_every=1",
        "train.validate_every=2",
        "train.validation_steps=2",
        "train.validation_prompts=[a red circle]",
    )
    assert (run / "lora" / "pytorch_lora_weights.safetensors").exists()
    assert (run / "config.yaml").exists() and (run / "metrics.jsonl").exists()
    assert len(list((run / "validation" / "step_0000002").glob("*.png"))) == 1
    assert list((run / "logs").rglob("events.out.tfevents*")), "TensorBoard events written"
    images = tmp_path / "images"
    prefdiff(
        "generate",
        "--model",
        str(model),
        "--lora",
        str(run / "lora"),
        "--prompt",
        "a red circle",
        "--seed",
        "0",
        "--seed",
        "1",
        "--steps",
        "2",
        "--out",
        str(images),
    )
    assert sorted(p.name for p in images.glob("*.png")) == ["p0000_s0.png", "p0000_s1.png"]
    assert (images / "manifest.jsonl").exists()


def test_bad_config_key_is_one_clear_line(tmp_path):
    result = prefdiff("train", "optim.lrr=1", check=False)
    assert result.returncode == 2
    assert "error: unknown config key 'optim.lrr'" in result.stderr
    assert "Traceback" not in result.stderr


def test_non_pipeline_directory_is_one_clear_line(tmp_path, shapes_parquet):
    (tmp_path / "notes.txt").write_text("hi")
    result = prefdiff(
        "train",
        f"model.path={tmp_path}",
        f"data.path={shapes_parquet}",
        f"output_dir={tmp_path / 'run'}",
        "train.report_to=none",
        check=False,
    )
    assert result.returncode == 2
    assert "is not a diffusers pipeline directory: no model_index.json (found: notes.txt)" in result.stderr
    assert "Traceback" not in result.stderr


def test_toy_layouts_generate_from_them_and_compare_refuses_another_sampler(tiny_sd, tmp_path):
    """`prefdiff toy layouts`, then `generate --init-images LAYOUTS.jsonl --strength` with the
    layouts as the prompt set, at 4 steps and at 3: compare refuses to pair them in one line
    naming the setting; a missing layout is one line too."""
    layouts = tmp_path / "layouts"
    prefdiff("toy", "layouts", "--out", str(layouts), "--per-caption", "1")
    mapping = layouts / "layouts.jsonl"
    assert len(mapping.read_text().splitlines()) == 6
    common = ("--model", str(tiny_sd), "--init-images", str(mapping), "--strength", "0.5", "--resolution", "32")
    for name, steps in (("a", "4"), ("c", "3")):
        out = prefdiff("generate", *common, "--steps", steps, "--guidance-scale", "0", "--out", str(tmp_path / name))
        assert "6 image(s)" in out.stdout
    from prefdiff.manifests import pair_runs

    assert len(pair_runs(tmp_path / "a", tmp_path / "c", allow_sampler_mismatch=True)) == 6  # same layouts, seeds
    result = prefdiff("compare", str(tmp_path / "a"), str(tmp_path / "c"), "--scorer", "clip:nowhere",
                      "--out", str(tmp_path / "cmp"), check=False)  # fmt: skip
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "sampler setting 'steps' 4 in A and 3 in B" in result.stderr and "--allow-sampler-mismatch" in result.stderr
    missing = prefdiff("generate", *common[:2], "--prompt", "a red circle", "--init-images", str(tmp_path / "no.png"),
                       "--strength", "0.5", "--out", str(tmp_path / "d"), check=False)  # fmt: skip
    assert missing.returncode == 2 and "no.png: no such file or folder" in missing.stderr
