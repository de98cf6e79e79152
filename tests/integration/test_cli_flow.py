"""The `prefdiff` CLI end to end on tiny SD3 and FLUX.1 pipelines: make-tiny, cache, train
(LoRA and full), generate with each result, compare."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from .test_cli import prefdiff

pytestmark = pytest.mark.slow

T5_TOKENS = "model.max_sequence_length=16"  # the cache and training both read it


@pytest.mark.parametrize("family", ["sd3", "flux"])
def test_flow_family_end_to_end(family, tmp_path, shapes_parquet):
    model, cache = tmp_path / "model", tmp_path / "cache"
    prefdiff("make-tiny", "--family", family, "--out", str(model))
    assert json.loads((model / "model_index.json").read_text())["_class_name"] in (
        "StableDiffusion3Pipeline",
        "FluxPipeline",
    )
    out = prefdiff(
        "cache", "--model", str(model), "--data", str(shapes_parquet), "--out", str(cache), "--resolution", "32",
        T5_TOKENS,
    ).stdout  # fmt: skip
    assert "cache of" in out
    info = json.loads((cache / "cache_info.json").read_text())
    assert info["model"]["family"] == family and info["model"]["max_sequence_length"] == "16"

    common = [
        f"model.path={model}",
        f"data.path={cache}",
        "data.resolution=32",
        "data.random_flip=false",
        "train.max_steps=2",
        "train.batch_size=2",
        "train.checkpoint_every=0",
        "train.report_to=none",
        T5_TOKENS,
    ]
    lora_run, full_run = tmp_path / "lora_run", tmp_path / "full_run"
    prefdiff("train", "--config", "tiny_dpo_lora", *common, f"output_dir={lora_run}")
    prefdiff("train", "--config", "tiny_dpo_lora", *common, f"output_dir={full_run}", "lora.enabled=false")
    lora_file = lora_run / "lora" / "pytorch_lora_weights.safetensors"
    assert any("lora_A" in key for key in load_file(str(lora_file)))  # peft keys, as the transformer loaders read
    assert (full_run / "transformer" / "config.json").exists()
    rows = [json.loads(line) for line in (lora_run / "metrics.jsonl").read_text().splitlines()]
    assert [row["step"] for row in rows] == [1, 2]
    assert {"loss", "implicit_acc", "negative_margin_share", "grad_norm"} <= rows[-1].keys()

    images = {}
    for name, extra in [("base", []), ("lora", ["--lora", str(lora_run / "lora")]),
                        ("full", ["--denoiser", str(full_run / "transformer")])]:  # fmt: skip
        images[name] = tmp_path / f"images_{name}"
        prefdiff(
            "generate", "--model", str(model), "--prompt", "a red circle", "--prompt", "a blue square",
            "--seed", "0", "--steps", "2", "--resolution", "32", "--out", str(images[name]), *extra,
        )  # fmt: skip
        assert sorted(p.name for p in images[name].glob("*.png")) == ["p0000_s0.png", "p0001_s0.png"]
    compare = tmp_path / "compare"
    out = prefdiff(
        "compare",
        str(images["lora"]),
        str(images["base"]),
        "--scorer",
        "python:prefdiff.toy.oracle:large_central",
        "--out",
        str(compare),
    ).stdout
    assert "A wins" in out
    summary = json.loads((compare / "summary.json").read_text())
    assert summary["n"] == 2


def test_a_flow_sampler_other_than_the_default_is_refused(tmp_path):
    model = tmp_path / "model"
    prefdiff("make-tiny", "--family", "sd3", "--out", str(model))
    result = prefdiff(
        "generate", "--model", str(model), "--prompt", "a", "--scheduler", "ddim", "--out", str(tmp_path / "x"),
        check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert "FlowMatchEulerDiscreteScheduler" in result.stderr


def test_full_fine_tune_saves_a_loadable_transformer_that_differs(tmp_path, shapes_parquet):
    """The saved RUN/transformer loads as the family's transformer class and moved off the base."""
    from diffusers import SD3Transformer2DModel

    model, run = tmp_path / "model", tmp_path / "run"
    prefdiff("make-tiny", "--family", "sd3", "--out", str(model))
    prefdiff(
        "train", "--config", "tiny_sft_lora", f"model.path={model}", f"data.path={shapes_parquet}",
        f"output_dir={run}", "data.resolution=32", "train.max_steps=1", "train.batch_size=2", "lora.enabled=false",
        "train.checkpoint_every=0", "train.report_to=none", "optim.lr=1e-2", T5_TOKENS,
    )  # fmt: skip
    tuned = SD3Transformer2DModel.from_pretrained(str(run / "transformer"))
    base = SD3Transformer2DModel.from_pretrained(str(model), subfolder="transformer")
    moved = max((a - b).abs().max().item() for a, b in zip(tuned.parameters(), base.parameters(), strict=True))
    assert moved > 0
    assert all(torch.isfinite(p).all() for p in tuned.parameters())
