"""`prefdiff toy pretrain` on a few steps: a loadable pipeline, a report, the same weights from the same seed."""

import json

from safetensors.torch import load_file
from typer.testing import CliRunner

from prefdiff.cli import app
from prefdiff.models import load_backbone
from prefdiff.toy.pretrain import PretrainSettings, pretrain

TINY = dict(
    pool=64,
    vae_steps=2,
    vae_batch=4,
    unet_steps=2,
    unet_batch=4,
    eval_images_per_caption=1,
    eval_steps=2,
    check_images=8,
)


def test_pretrain_is_reproducible_and_loads(tmp_path):
    reports = [pretrain(tmp_path / name, PretrainSettings(seed=3, **TINY), log=lambda _: None) for name in ("a", "b")]
    assert reports[0]["samples"]["images"] == 24  # every colour-shape caption once
    for key in ("colour_match", "shape_match", "radius_mean", "background_std"):
        assert reports[0]["samples"][key] == reports[1]["samples"][key]
    weights = [load_file(tmp_path / name / "unet" / "diffusion_pytorch_model.safetensors") for name in ("a", "b")]
    assert all((weights[0][k] == weights[1][k]).all() for k in weights[0])
    backbone = load_backbone(tmp_path / "a")
    assert backbone.latent_shape(32) == (4, 8, 8)
    report = json.loads((tmp_path / "a" / "pretrain_report.json").read_text())
    assert report["scaling_factor"] == backbone.vae.config.scaling_factor


def test_pretrain_cli_refuses_bad_step_counts(tmp_path):
    result = CliRunner().invoke(app, ["toy", "pretrain", "--out", str(tmp_path), "--unet-steps", "0"])
    assert result.exit_code != 0 and "--unet-steps" in str(result.exception)


FLOW_TINY = dict(
    pool=64, transformer_steps=2, transformer_batch=4, width=32, layers=1, eval_images_per_caption=1, eval_steps=2
)


def test_flow_pretrain_is_reproducible_and_writes_an_sd3_pipeline(tmp_path):
    from diffusers import StableDiffusion3Pipeline

    from prefdiff.toy.flowbase import FlowPretrainSettings, pretrain_flow

    reports = [
        pretrain_flow(tmp_path / name, FlowPretrainSettings(seed=5, **FLOW_TINY), log=lambda _: None)
        for name in ("a", "b")
    ]
    assert reports[0]["samples"]["images"] == 24
    assert reports[0]["samples"] == reports[1]["samples"]
    for part in ("transformer/diffusion_pytorch_model.safetensors", "text_encoder_3/model.safetensors"):
        weights = [load_file(tmp_path / name / part) for name in ("a", "b")]
        assert weights[0].keys() == weights[1].keys()
        assert all((weights[0][k] == weights[1][k]).all() for k in weights[0]), part
    pipe = StableDiffusion3Pipeline.from_pretrained(str(tmp_path / "a"))
    assert pipe.text_encoder_3 is not None and pipe.transformer.config.in_channels == 4
    backbone = load_backbone(tmp_path / "a")
    assert backbone.family == "sd3" and backbone.latent_shape(32) == (4, 8, 8)
    assert backbone.encoding_settings() == {"max_sequence_length": 8}  # the T5 tokenizer's length
    report = json.loads((tmp_path / "a" / "pretrain_report.json").read_text())
    assert report["scaling_factor"] == backbone.scaling_factor and report["shift_factor"] == backbone.shift_factor


def test_flow_pretrain_reuses_the_shipped_vae_and_clip_encoder(tmp_path):
    from prefdiff.toy.flowbase import SHIPPED_UNET_BASE, FlowPretrainSettings, build_flow_components

    parts = build_flow_components(FlowPretrainSettings(**FLOW_TINY), SHIPPED_UNET_BASE)
    shipped = load_file(SHIPPED_UNET_BASE / "text_encoder" / "model.safetensors")
    for name in ("text_encoder", "text_encoder_2"):
        state = parts[name].text_model.state_dict()
        assert all((state[k.removeprefix("text_model.")] == v).all() for k, v in shipped.items()), name
    vae = load_file(SHIPPED_UNET_BASE / "vae" / "diffusion_pytorch_model.safetensors")
    assert all((parts["vae"].state_dict()[k] == v).all() for k, v in vae.items())


def test_pretrain_cli_names_a_setting_the_family_lacks(tmp_path):
    result = CliRunner().invoke(
        app, ["toy", "pretrain", "--family", "sd3", "--out", str(tmp_path), "--unet-steps", "5"]
    )
    assert result.exit_code != 0 and "--unet-steps" in str(result.exception)
    result = CliRunner().invoke(app, ["toy", "pretrain", "--family", "flux", "--out", str(tmp_path)])
    assert result.exit_code != 0 and "--family" in str(result.exception)
