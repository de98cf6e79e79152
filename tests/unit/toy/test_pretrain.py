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
