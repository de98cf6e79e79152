import json

import pytest
import torch

from prefdiff.errors import ModelLoadError
from prefdiff.models import SDBackbone, SDXLBackbone, load_backbone


def test_sd_backbone_loads_and_encodes(tiny_sd):
    backbone = load_backbone(tiny_sd)
    assert isinstance(backbone, SDBackbone) and backbone.prediction_type == "epsilon"
    cond = backbone.encode_prompts(["a red circle", "a blue square"])
    assert cond["encoder_hidden_states"].shape == (2, 77, 32)
    mean, std = backbone.latent_distribution(torch.zeros(2, 3, 32, 32))
    assert mean.shape == std.shape == (2, 4, 4, 4)
    assert backbone.latent_shape(32) == (4, 4, 4)


def test_v_prediction_target_is_velocity(tiny_sd_v):
    """v = sqrt(a_t) * eps - sqrt(1 - a_t) * x0 (the scheduler's get_velocity)."""
    backbone = load_backbone(tiny_sd_v)
    assert backbone.prediction_type == "v_prediction"
    x0, eps, t = torch.randn(1, 4, 8, 8), torch.randn(1, 4, 8, 8), torch.tensor([500])
    _, target = backbone.noisy_input_and_target(x0, eps, t)
    alpha_bar = backbone.noise_scheduler.alphas_cumprod[500]
    expected = alpha_bar.sqrt() * eps - (1 - alpha_bar).sqrt() * x0
    assert torch.allclose(target, expected, atol=1e-5)
    _, eps_target = load_backbone(tiny_sd_v, prediction_type="epsilon").noisy_input_and_target(x0, eps, t)
    assert torch.equal(eps_target, eps)


def test_sdxl_backbone_conditioning(tiny_sdxl):
    backbone = load_backbone(tiny_sdxl)
    assert isinstance(backbone, SDXLBackbone)
    cond = backbone.encode_prompts(["a red circle"])
    assert cond["encoder_hidden_states"].shape == (1, 77, 64)  # two encoders of width 32, concatenated
    assert cond["text_embeds"].shape == (1, 32)
    original_size, crop_top_left = torch.tensor([[600, 800], [512, 512]]), torch.tensor([[0, 44], [3, 0]])
    per_image = backbone.image_conditioning(cond, original_size, crop_top_left, resolution=32)
    assert per_image["encoder_hidden_states"].shape[0] == 2
    # each image's own original size and crop box: (orig_h, orig_w, top, left, target_h, target_w)
    assert per_image["time_ids"].tolist() == [[600, 800, 0, 44, 32, 32], [512, 512, 3, 0, 32, 32]]


def test_noise_is_shared_per_pair_and_keyed_by_slot(tiny_sd):
    backbone = load_backbone(tiny_sd)
    draw = backbone.draw_noise([5, 6], seed=3, latent_shape=(4, 8, 8))
    again = backbone.draw_noise([6], seed=3, latent_shape=(4, 8, 8))
    assert torch.equal(draw.noise[1], again.noise[0]) and draw.timesteps[1] == again.timesteps[0]
    assert not torch.equal(draw.noise[0], draw.noise[1])
    other_seed = backbone.draw_noise([6], seed=4, latent_shape=(4, 8, 8))
    assert not torch.equal(other_seed.noise[0], again.noise[0])


def test_not_a_pipeline_directory_says_what_it_found(tmp_path):
    (tmp_path / "weights.bin").write_bytes(b"x")
    with pytest.raises(ModelLoadError, match=r"no model_index.json \(found: weights.bin\)"):
        load_backbone(tmp_path)
    with pytest.raises(ModelLoadError, match="not found"):
        load_backbone(tmp_path / "missing")


def test_unsupported_pipeline_class_is_named(tmp_path):
    (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": "FluxPipeline"}))
    with pytest.raises(
        ModelLoadError, match=r"'FluxPipeline'.*sd \(StableDiffusionPipeline\), sdxl \(StableDiffusionXLPipeline\)"
    ):
        load_backbone(tmp_path)


def test_missing_component_is_named(tmp_path):
    (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))
    with pytest.raises(ModelLoadError, match="lacks the 'unet' sub-folder"):
        load_backbone(tmp_path)
